//! The images real nodes run, built on this machine (there is no registry):
//! the sandbox (pause) image, a busybox test app, and the operator's image
//! from the repository's Dockerfile with the binaries under test. See
//! `testcluster/images.sh`; results are cached by content.

use std::path::{Path, PathBuf};

use super::operator::operator_binary;

pub struct Image {
    /// The reference pods use (`image:`); never pulled (`imagePullPolicy: Never`).
    pub reference: String,
    pub archive: PathBuf,
}

pub struct Images {
    pub pause: Image,
    pub testapp: Image,
    pub operator: Image,
}

impl Images {
    pub fn archives(&self) -> Vec<PathBuf> {
        [&self.pause, &self.testapp, &self.operator]
            .iter()
            .map(|i| i.archive.clone())
            .collect()
    }

    /// Repository and tag of the operator image, as the chart's values.
    pub fn operator_repository_and_tag(&self) -> (&str, &str) {
        self.operator
            .reference
            .rsplit_once(':')
            .expect("operator image has a tag")
    }
}

/// Builds (or finds cached) the three images for the binaries under test.
pub fn build() -> Images {
    let operator = Path::new(operator_binary());
    let plugin = operator.with_file_name("kubectl-statefulapp");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("testcluster/images.sh");
    let out = std::env::temp_dir().join("statefulapp-images");
    let output = std::process::Command::new("bash")
        .arg(&script)
        .arg(operator)
        .arg(&plugin)
        .arg(&out)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} failed: {}",
        script.display(),
        output.status
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let find = |name: &str| -> Image {
        let line = stdout
            .lines()
            .find(|l| l.split('\t').next() == Some(name))
            .unwrap_or_else(|| panic!("images.sh printed no {name} image:\n{stdout}"));
        let fields: Vec<&str> = line.split('\t').collect();
        Image {
            reference: fields[1].to_string(),
            archive: PathBuf::from(fields[2]),
        }
    };
    Images {
        pause: find("pause"),
        testapp: find("testapp"),
        operator: find("operator"),
    }
}
