//! Files to and from a container through tar archives.

use vana_sandbox_core::validate::check_relative_path;
use vana_sandbox_core::{BackendError, FileEntry};

fn file_err(path: &str, reason: impl Into<String>) -> BackendError {
    BackendError::File {
        path: path.into(),
        reason: reason.into(),
    }
}

/// A tar of `dirs` (relative paths with their modes), then `files` (with their parent
/// directories), owned by `uid`, to extract in /workspace.
pub(crate) fn pack(
    files: &[FileEntry],
    uid: u32,
    extra_dirs: &[(&str, u32)],
) -> Result<Vec<u8>, BackendError> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = Vec::new();
    for (path, mode) in extra_dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(*mode);
        h.set_uid(uid.into());
        h.set_gid(uid.into());
        h.set_size(0);
        b.append_data(&mut h, format!("{path}/"), std::io::empty())
            .map_err(|e| file_err(path, e.to_string()))?;
        dirs.push(path.to_string());
    }
    for f in files {
        check_relative_path(&f.path).map_err(|m| file_err(&f.path, m))?;
        let mut acc = String::new();
        for part in f
            .path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map(|(_, p)| p.to_vec())
            .unwrap_or_default()
        {
            acc = if acc.is_empty() {
                part.to_string()
            } else {
                format!("{acc}/{part}")
            };
            if !dirs.contains(&acc) {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_uid(uid.into());
                h.set_gid(uid.into());
                h.set_size(0);
                b.append_data(&mut h, format!("{acc}/"), std::io::empty())
                    .map_err(|e| file_err(&f.path, e.to_string()))?;
                dirs.push(acc.clone());
            }
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(if f.executable { 0o755 } else { 0o644 });
        h.set_uid(uid.into());
        h.set_gid(uid.into());
        h.set_size(f.content.len() as u64);
        b.append_data(&mut h, &f.path, f.content.as_slice())
            .map_err(|e| file_err(&f.path, e.to_string()))?;
    }
    b.into_inner()
        .map_err(|e| BackendError::backend("building the upload archive", e))
}

/// The single regular file in a tar downloaded for `path` (links and directories are refused).
pub(crate) fn unpack_one(path: &str, archive: &[u8], max: u64) -> Result<FileEntry, BackendError> {
    let mut a = tar::Archive::new(archive);
    let mut entries = a.entries().map_err(|e| file_err(path, e.to_string()))?;
    let Some(entry) = entries.next() else {
        return Err(file_err(path, "not found"));
    };
    let mut entry = entry.map_err(|e| file_err(path, e.to_string()))?;
    if entry.header().entry_type() != tar::EntryType::Regular {
        return Err(file_err(path, "not a regular file"));
    }
    let size = entry.header().size().unwrap_or(0);
    if size > max {
        return Err(file_err(path, "file too large to read back"));
    }
    let mode = entry.header().mode().unwrap_or(0);
    let mut content = Vec::with_capacity(size as usize);
    std::io::Read::read_to_end(&mut entry, &mut content)
        .map_err(|e| file_err(path, e.to_string()))?;
    Ok(FileEntry {
        path: path.into(),
        content,
        executable: mode & 0o111 != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_and_unpack() {
        let files = vec![
            FileEntry {
                path: "a/b/c.txt".into(),
                content: b"hi".to_vec(),
                executable: false,
            },
            FileEntry {
                path: "main".into(),
                content: b"\x7fELF".to_vec(),
                executable: true,
            },
        ];
        let tar = pack(&files, 10001, &[(".tmp", 0o1777)]).unwrap_or_default();
        let mut a = tar::Archive::new(tar.as_slice());
        let names: Vec<String> = a
            .entries()
            .map(|es| {
                es.filter_map(Result::ok)
                    .filter_map(|e| e.path().ok().map(|p| p.display().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(names, [".tmp/", "a/", "a/b/", "a/b/c.txt", "main"]);
        assert!(pack(
            &[FileEntry {
                path: "../x".into(),
                content: vec![],
                executable: false
            }],
            1,
            &[]
        )
        .is_err());
        let one = pack(&files[1..], 1, &[]).unwrap_or_default();
        let f = unpack_one("main", &one, 1 << 20);
        assert!(matches!(f, Ok(ref f) if f.executable && f.content == b"\x7fELF"));
    }
}
