//! Certificates and keys for the test control plane: a CA, the API server's
//! serving certificate, an admin client certificate (group `system:masters`),
//! the service-account signing key, and client certificates issued later
//! (a real node's kubelet joins as `system:node:<name>`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

pub struct Certs {
    pub ca_cert: PathBuf,
    pub ca_pem: String,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    /// Signs service-account tokens (PKCS#8 EC private key).
    pub service_account_key: PathBuf,
    /// Verifies service-account tokens.
    pub service_account_pub: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Certs {
    /// A client certificate and key (PEM) for `common_name` in `organization`.
    pub fn issue_client(&self, common_name: &str, organization: &str) -> (String, String) {
        let key = KeyPair::generate().expect("client key");
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(common_name, Some(organization));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("client certificate");
        (cert.pem(), key.serialize_pem())
    }
}

fn distinguished_name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

/// `serving_ips`: addresses the API server is reached at besides loopback
/// and the `kubernetes` Service IP (a real node's bridge address).
pub fn generate(dir: &Path, serving_ips: &[IpAddr]) -> Certs {
    let write = |name: &str, content: &str| {
        let path = dir.join(name);
        std::fs::write(&path, content).expect("write certificate file");
        path
    };

    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = distinguished_name("statefulapp-test-ca", None);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);

    let serving_key = KeyPair::generate().expect("serving key");
    let mut serving = CertificateParams::new(vec![
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
    ])
    .expect("serving params");
    serving
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    serving
        .subject_alt_names
        .push(SanType::IpAddress([10, 0, 0, 1].into()));
    for ip in serving_ips {
        serving.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    serving.distinguished_name = distinguished_name("kube-apiserver", None);
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving
        .signed_by(&serving_key, &issuer)
        .expect("serving certificate");

    let admin_key = KeyPair::generate().expect("admin key");
    let mut admin = CertificateParams::default();
    admin.distinguished_name = distinguished_name("admin", Some("system:masters"));
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_cert = admin
        .signed_by(&admin_key, &issuer)
        .expect("admin certificate");

    let sa_key = KeyPair::generate().expect("service account key");

    Certs {
        ca_cert: write("ca.crt", &ca_cert.pem()),
        ca_pem: ca_cert.pem(),
        serving_cert: write("apiserver.crt", &serving_cert.pem()),
        serving_key: write("apiserver.key", &serving_key.serialize_pem()),
        admin_cert_pem: admin_cert.pem(),
        admin_key_pem: admin_key.serialize_pem(),
        service_account_key: write("sa.key", &sa_key.serialize_pem()),
        service_account_pub: write("sa.pub", &sa_key.public_key_pem()),
        issuer,
    }
}
