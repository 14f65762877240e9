//! The database directory holds the password hashes and the JWT secret: at every start it is
//! made private to its owner, the directory mode 0700 and the files in it 0600, whatever the
//! umask or an earlier version left.

use std::path::Path;

/// Creates `dir` (mode 0700) if it does not exist yet. Failures are left for the store to
/// report when it opens the directory.
pub fn create_private_dir(dir: &Path) {
    if dir.exists() {
        return;
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(parent);
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    let _ = builder.create(dir);
}

/// Sets `dir` to 0700 and every regular file directly in it to 0600. What cannot be changed
/// is logged as a warning; a directory shared by everyone (sticky bit, like `/tmp`) is left
/// as it is.
pub fn restrict_db_dir(dir: &Path) {
    #[cfg(unix)]
    unix::restrict(dir);
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(unix)]
mod unix {
    use std::fs::Permissions;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    const STICKY: u32 = 0o1000;

    pub(super) fn restrict(dir: &Path) {
        match std::fs::metadata(dir) {
            Ok(meta) if meta.permissions().mode() & STICKY != 0 => tracing::warn!(
                dir = %dir.display(),
                "the database directory is a shared directory (sticky bit): its mode is left \
                 as it is; give Broker a directory of its own with --db"
            ),
            Ok(meta) => set_mode(dir, meta.permissions().mode(), 0o700),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read the database directory's mode");
                return;
            }
        }
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot list the database directory");
                return;
            }
        };
        for entry in entries.flatten() {
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            if let (true, Ok(meta)) = (is_file, entry.metadata()) {
                set_mode(&entry.path(), meta.permissions().mode(), 0o600);
            }
        }
    }

    fn set_mode(path: &Path, current: u32, wanted: u32) {
        if current & 0o7777 == wanted {
            return;
        }
        match std::fs::set_permissions(path, Permissions::from_mode(wanted)) {
            Ok(()) => tracing::info!(
                path = %path.display(),
                "mode {:o} changed to {wanted:o}",
                current & 0o7777
            ),
            Err(e) => tracing::warn!(
                path = %path.display(),
                error = %e,
                "cannot restrict the mode to {wanted:o}"
            ),
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn dir_and_files_become_private() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("db");
        create_private_dir(&dir);
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let file = dir.join("broker.redb");
        std::fs::write(&file, b"x").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        restrict_db_dir(&dir);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&file), 0o600);
    }
}
