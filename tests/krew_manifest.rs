//! The plugin's krew manifest, as a release makes it
//! (`scripts/krew-release.sh`), passes krew's own checks
//! (`validate-krew-manifest`, what krew-index runs on a submission) and
//! installs with krew itself from the archive the script packed.

mod support;

use std::path::Path;
use std::process::Command;

use support::chart::run;
use support::cluster::tools_dir;

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-statefulapp");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/krew-release.sh");
const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

/// Packs this build's plugin as the linux/amd64 release of VERSION in `out`.
fn release(out: &Path) {
    run(Command::new("bash").arg(SCRIPT).args([
        "--version",
        VERSION,
        "--out",
        out.to_str().unwrap(),
        &format!("linux/amd64={PLUGIN}"),
    ]));
}

/// `kubectl krew install --manifest ... --archive ...` into `root`.
fn krew_install(root: &Path, manifest: &Path, archive: &Path) -> std::process::Output {
    Command::new(tools_dir().join("kubectl-krew"))
        .args(["install", "--manifest", manifest.to_str().unwrap()])
        .args(["--archive", archive.to_str().unwrap()])
        .env("KREW_ROOT", root)
        .env("KREW_OS", "linux")
        .env("KREW_ARCH", "amd64")
        .output()
        .expect("run krew")
}

#[test]
fn the_release_manifest_passes_krews_validation_and_installs_with_krew() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("release");
    release(&out);
    let manifest = out.join("statefulapp.yaml");
    let archive = out.join(format!("kubectl-statefulapp_{VERSION}_linux_amd64.tar.gz"));

    // Structure, the platforms' selectors, no two platforms for one
    // os/arch: all but the download, which needs the published release.
    let validated = Command::new(tools_dir().join("validate-krew-manifest"))
        .args(["-manifest", manifest.to_str().unwrap(), "-skip-install"])
        .output()
        .expect("run validate-krew-manifest");
    assert!(
        validated.status.success(),
        "{}",
        String::from_utf8_lossy(&validated.stderr)
    );
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains(&format!("version: {VERSION}")), "{text}");
    assert!(
        text.contains(&format!(
            "releases/download/{VERSION}/kubectl-statefulapp_{VERSION}_linux_amd64.tar.gz"
        )),
        "{text}"
    );

    // krew checks the archive against the manifest's sha256, installs the
    // binary and LICENSE (krew-index requires a license in the archive).
    let root = dir.path().join("krew");
    let installed = krew_install(&root, &manifest, &archive);
    assert!(
        installed.status.success(),
        "{}",
        String::from_utf8_lossy(&installed.stderr)
    );
    let store = root.join("store/statefulapp").join(VERSION);
    assert!(store.join("LICENSE").is_file(), "LICENSE installed");
    let version = run(Command::new(root.join("bin/kubectl-statefulapp")).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("kubectl-statefulapp {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn krew_refuses_an_archive_the_manifest_does_not_describe() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("release");
    release(&out);
    let manifest = out.join("statefulapp.yaml");
    let archive = out.join(format!("kubectl-statefulapp_{VERSION}_linux_amd64.tar.gz"));
    let text = std::fs::read_to_string(&manifest).unwrap();
    let sha = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("sha256: "))
        .expect("a sha256")
        .to_string();
    let other = format!(
        "{}{}",
        if sha.starts_with('0') { '1' } else { '0' },
        &sha[1..]
    );
    std::fs::write(&manifest, text.replace(&sha, &other)).unwrap();

    let installed = krew_install(&dir.path().join("krew"), &manifest, &archive);
    assert!(!installed.status.success(), "installed with a wrong sha256");
    let stderr = String::from_utf8_lossy(&installed.stderr);
    assert!(
        stderr.contains("checksum does not match") && stderr.contains(&sha),
        "{stderr}"
    );
}

/// The template's placeholders are what the script fills.
#[test]
fn the_committed_manifest_is_a_template_for_every_platform() {
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/krew/statefulapp.yaml"
    ))
    .unwrap();
    for platform in ["LINUX_AMD64", "LINUX_ARM64", "DARWIN_AMD64", "DARWIN_ARM64"] {
        assert!(
            template.contains(&format!("sha256: SHA256_{platform}\n")),
            "no {platform}"
        );
    }
    assert!(template.contains("version: VERSION\n"));
}
