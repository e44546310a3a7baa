//! The policy directory: which file is a rule file, a Rego module or a data document.
//!
//! One directory (`policies/` by default) holds everything that decides what salve
//! may do, so it can be reviewed, versioned and reloaded as one unit. The layout
//! follows OPA bundles where OPA has a convention: `*.rego` files are modules, and a
//! file named `data.json` or `data.yaml` is a data document mounted under `data.`
//! at its directory's path (`limits/data.json` becomes `data.limits`). Every other
//! `*.yaml`/`*.yml` file is a remediation rule file. Hidden files and directories
//! are skipped. Files are listed in path order so loading and hashing are stable.
//!
//! Symbolic links are followed while they stay inside the directory: a ConfigMap mounted
//! by the kubelet is made of them (each key, or each key's top directory, links into a
//! hidden `..data` directory), and skipping them once left `guardrails/data.json`
//! unloaded. A link that leads outside the directory is refused with its path: what
//! decides salve's writes is exactly what lies below the directory that was reviewed.

use std::collections::HashSet;
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
        let real_root = root.canonicalize().map_err(|source| BundleError {
            path: root.to_owned(),
            source,
        })?;
        let mut walk_state = Walk {
            root,
            real_root: &real_root,
            seen: HashSet::from([real_root.clone()]),
        };
        walk_state.dir(root, &mut files)?;
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

/// A walk over the bundle: where it started, and the real directories already read (a
/// link back up the tree must not loop).
struct Walk<'a> {
    root: &'a Path,
    real_root: &'a Path,
    seen: HashSet<PathBuf>,
}

impl Walk<'_> {
    fn dir(&mut self, dir: &Path, out: &mut Vec<BundleFile>) -> Result<(), BundleError> {
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
            let file_type = entry.file_type().map_err(io(&path))?;
            // Where a link leads, checked once: inside the policy directory or refused.
            let linked = if file_type.is_symlink() {
                let real = path.canonicalize().map_err(io(&path))?;
                if !real.starts_with(self.real_root) {
                    return Err(BundleError {
                        path,
                        source: std::io::Error::other(format!(
                            "it is a symbolic link to {}, outside the policy directory {}; refusing to load it",
                            real.display(),
                            self.real_root.display()
                        )),
                    });
                }
                Some(real)
            } else {
                None
            };
            let is_dir = linked
                .as_ref()
                .map_or(file_type.is_dir(), |real| real.is_dir());
            if is_dir {
                // Each real directory once: a link back up the tree does not loop.
                let real = match linked {
                    Some(real) => real,
                    None => path.canonicalize().map_err(io(&path))?,
                };
                if self.seen.insert(real) {
                    self.dir(&path, out)?;
                }
                continue;
            }
            let Some(kind) = classify(&name) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let relative = path
                .strip_prefix(self.root)
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

    /// The layout the kubelet gives a ConfigMap volume whose keys include a directory.
    fn configmap_mount(dir: &Path) {
        use std::os::unix::fs::symlink;
        let stamp = dir.join("..2026_12_01_03_00_00.123456789");
        std::fs::create_dir_all(stamp.join("guardrails")).unwrap();
        std::fs::write(stamp.join("rules.yaml"), "rules: []\n").unwrap();
        std::fs::write(stamp.join("guardrails/data.json"), "{}").unwrap();
        std::fs::write(stamp.join("guardrails/limits.rego"), "package salve\n").unwrap();
        symlink("..2026_12_01_03_00_00.123456789", dir.join("..data")).unwrap();
        symlink("..data/rules.yaml", dir.join("rules.yaml")).unwrap();
        symlink("..data/guardrails", dir.join("guardrails")).unwrap();
    }

    #[test]
    fn a_configmap_mount_loads_through_the_kubelets_links() {
        let dir = tempfile::tempdir().unwrap();
        configmap_mount(dir.path());
        let bundle = Bundle::read(dir.path()).unwrap();
        let files: Vec<_> = bundle
            .files
            .iter()
            .map(|f| (f.relative.as_str(), f.kind))
            .collect();
        assert_eq!(
            files,
            [
                ("guardrails/data.json", FileKind::Data),
                ("guardrails/limits.rego", FileKind::Rego),
                ("rules.yaml", FileKind::Rules),
            ]
        );
    }

    #[test]
    fn a_link_out_of_the_policy_directory_is_refused_with_its_path() {
        use std::os::unix::fs::symlink;
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("evil.rego"), "package salve\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        configmap_mount(dir.path());
        symlink(outside.path(), dir.path().join("extra")).unwrap();
        let e = Bundle::read(dir.path()).unwrap_err();
        assert_eq!(e.path, dir.path().join("extra"));
        let text = e.to_string();
        assert!(text.contains("outside the policy directory"), "{text}");

        // A link back into the tree does not loop; a file link out is refused too.
        std::fs::remove_file(dir.path().join("extra")).unwrap();
        symlink(".", dir.path().join("..data/guardrails/self")).unwrap();
        assert_eq!(Bundle::read(dir.path()).unwrap().files.len(), 3);
        symlink(
            outside.path().join("evil.rego"),
            dir.path().join("evil.rego"),
        )
        .unwrap();
        assert!(
            Bundle::read(dir.path())
                .unwrap_err()
                .to_string()
                .contains("outside the policy directory")
        );
    }
}
