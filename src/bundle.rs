//! The policy directory: which file is a rule file, a Rego module or a data document.
//!
//! One directory (`policies/` by default) holds everything that decides what salve
//! may do, so it can be reviewed, versioned and reloaded as one unit. The layout
//! follows OPA bundles where OPA has a convention: `*.rego` files are modules, and a
//! file named `data.json` or `data.yaml` is a data document mounted under `data.`
//! at its directory's path (`limits/data.json` becomes `data.limits`). Every other
//! `*.yaml`/`*.yml` file is a remediation rule file. Hidden files and directories
//! are skipped. Files are listed in path order so loading and hashing are stable.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// What a file in the policy directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Rego,
    Data,
    Rules,
}

/// One file of the bundle, read into memory.
#[derive(Debug, Clone)]
pub struct BundleFile {
    pub kind: FileKind,
    /// Path relative to the bundle root, with `/` separators (stable across machines).
    pub relative: String,
    pub path: PathBuf,
    pub text: String,
}

/// Every file of a policy directory, read at one moment.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub root: PathBuf,
    pub files: Vec<BundleFile>,
}

/// Why the directory could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct BundleError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl Bundle {
    /// Reads every relevant file below `root`.
    pub fn read(root: &Path) -> Result<Bundle, BundleError> {
        let mut files = Vec::new();
        walk(root, root, &mut files)?;
        files.sort_by(|a, b| a.relative.cmp(&b.relative));
        Ok(Bundle {
            root: root.to_owned(),
            files,
        })
    }

    /// The files of one kind, in path order.
    pub fn of_kind(&self, kind: FileKind) -> impl Iterator<Item = &BundleFile> {
        self.files.iter().filter(move |f| f.kind == kind)
    }

    /// SHA-256 over the paths and contents of the given kinds: the version id a verdict records.
    pub fn hash(&self, kinds: &[FileKind]) -> String {
        let mut h = Sha256::new();
        for f in self.files.iter().filter(|f| kinds.contains(&f.kind)) {
            h.update(f.relative.as_bytes());
            h.update([0]);
            h.update(f.text.as_bytes());
            h.update([0]);
        }
        let digest = h.finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn classify(name: &str) -> Option<FileKind> {
    if name.ends_with(".rego") {
        Some(FileKind::Rego)
    } else if matches!(name, "data.json" | "data.yaml" | "data.yml") {
        Some(FileKind::Data)
    } else if name.ends_with(".yaml") || name.ends_with(".yml") {
        Some(FileKind::Rules)
    } else {
        None
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<BundleFile>) -> Result<(), BundleError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BundleError { path, source }
    };
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if entry.file_type().map_err(io(&path))?.is_dir() {
            walk(root, &path, out)?;
            continue;
        }
        let Some(kind) = classify(&name) else {
            continue;
        };
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let relative = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        out.push(BundleFile {
            kind,
            relative,
            path,
            text,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_opa_bundle_conventions() {
        assert_eq!(classify("guardrails.rego"), Some(FileKind::Rego));
        assert_eq!(classify("data.json"), Some(FileKind::Data));
        assert_eq!(classify("data.yaml"), Some(FileKind::Data));
        assert_eq!(classify("rules.yaml"), Some(FileKind::Rules));
        assert_eq!(classify("checkout.yml"), Some(FileKind::Rules));
        assert_eq!(classify("README.md"), None);
    }

    #[test]
    fn hash_changes_with_content_and_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.rego"), "package salve\n").unwrap();
        let one = Bundle::read(dir.path()).unwrap().hash(&[FileKind::Rego]);
        let again = Bundle::read(dir.path()).unwrap().hash(&[FileKind::Rego]);
        assert_eq!(one, again);
        std::fs::write(dir.path().join("a.rego"), "package salve\n# edit\n").unwrap();
        let two = Bundle::read(dir.path()).unwrap().hash(&[FileKind::Rego]);
        assert_ne!(one, two);
    }
}
