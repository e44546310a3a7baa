//! Volumes laid out exactly as the kubelet lays out a ConfigMap or Secret volume: the
//! files in a hidden, timestamped directory, `..data` a link to it, and each top-level
//! entry a link through `..data` (a key's path with a directory, `guardrails/data.json`,
//! makes `guardrails` a link to a directory). An update swaps `..data` atomically;
//! salve must follow these links, and only these.

use std::os::unix::fs::symlink;
use std::path::Path;

/// Writes `files` (path in the volume, content) into `mount` as the kubelet would.
pub fn lay_out_volume(mount: &Path, files: &[(String, Vec<u8>)]) {
    let stamp = "..2026_12_01_03_00_00.000000001";
    let real = mount.join(stamp);
    let mut tops = std::collections::BTreeSet::new();
    for (path, content) in files {
        let file = real.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, content).unwrap();
        tops.insert(path.split('/').next().unwrap().to_owned());
    }
    symlink(stamp, mount.join("..data")).unwrap();
    for top in tops {
        symlink(format!("..data/{top}"), mount.join(&top)).unwrap();
    }
}
