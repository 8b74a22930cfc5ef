//! Safe unpacking of a model that arrives packed: the `model.tar.gz` SageMaker (or `txcat train`)
//! writes, or a `.tgz` / plain `.tar`, unpacked into a scratch folder the caller owns.
//!
//! Invariants: nothing is ever written outside `dest`. Entry paths must be relative without `..`
//! (absolute paths and `..` are refused, not stripped); devices, FIFOs and sparse files are
//! refused; no link is ever created: a symlink or hard link whose target stays inside the archive
//! becomes a copy of that file once everything else is unpacked, one that points outside is
//! refused. The total unpacked size and the entry count are capped (a gzip bomb stops at the
//! cap). Every refusal is one line naming the archive and the entry. On error the caller drops
//! the scratch folder: a half-unpacked model is never used.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use flate2::read::MultiGzDecoder;
use tar::EntryType;

/// Far above any BERT-family checkpoint txcat fine-tunes, yet bounded so a crafted archive
/// cannot fill the disk.
pub const DEFAULT_MAX_UNPACKED_BYTES: u64 = 32 << 30;
/// A model directory holds a handful of files; this bounds inode bombs.
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

/// Caps on what one archive may unpack to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Bytes of file content written, links materialised as copies included.
    pub max_bytes: u64,
    /// Entries read (directories and skipped headers included).
    pub max_entries: usize,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_UNPACKED_BYTES,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// What an unpack produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    /// Regular files written (links materialised as copies included).
    pub files: usize,
    /// Bytes of file content written.
    pub bytes: u64,
}

const REPACK: &str =
    "repack the model folder with relative paths, e.g. `tar -czf model.tar.gz -C model_dir .`";

/// Why an archive was not unpacked.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// An entry that would escape the folder or that is not a plain file, folder or link.
    #[error("{archive}: refusing entry `{entry}`: {reason}; nothing from this archive is used; {REPACK}")]
    Refused {
        archive: String,
        entry: String,
        reason: String,
    },
    /// The unpacked content would pass the size cap.
    #[error("{archive}: entry `{entry}` takes the unpacked size past the limit of {limit} bytes; nothing from this archive is used; ship only the model files (config.json, model.safetensors, tokenizer files)")]
    TooLarge {
        archive: String,
        entry: String,
        limit: u64,
    },
    /// More entries than any model folder has.
    #[error("{archive}: more than {limit} entries; nothing from this archive is used; ship only the model files")]
    TooManyEntries { archive: String, limit: usize },
    /// Not a tar / tar.gz stream, or a truncated one.
    #[error("{archive}: not a readable .tar or .tar.gz archive ({reason}); re-create it, e.g. `tar -czf model.tar.gz -C model_dir .`")]
    Corrupt { archive: String, reason: String },
    /// Writing into the scratch folder failed.
    #[error("cannot write {path} while unpacking {archive}: {source}; check the free space of the temporary directory (TMPDIR)")]
    Io {
        archive: String,
        path: String,
        #[source]
        source: io::Error,
    },
}

impl ArchiveError {
    /// True when the archive itself is at fault (exit status 2), false for local I/O failures.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, ArchiveError::Io { .. })
    }
}

/// True for file names txcat unpacks as a model: `.tar.gz`, `.tgz`, `.tar` (any case).
pub fn is_archive_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".tar.gz", ".tgz", ".tar"]
        .iter()
        .any(|ext| lower.ends_with(ext))
}

/// A link whose file is copied in once every regular file is unpacked.
struct PendingLink {
    entry: String,
    path: PathBuf,
    target: PathBuf,
}

struct Unpacker<'a> {
    archive: String,
    dest: &'a Path,
    limits: UnpackLimits,
    written: u64,
    files: usize,
}

impl Unpacker<'_> {
    fn refuse(&self, entry: &str, reason: impl Into<String>) -> ArchiveError {
        ArchiveError::Refused {
            archive: self.archive.clone(),
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }

    fn corrupt(&self, err: io::Error) -> ArchiveError {
        ArchiveError::Corrupt {
            archive: self.archive.clone(),
            reason: err.to_string(),
        }
    }

    fn io(&self, path: &Path) -> impl FnOnce(io::Error) -> ArchiveError {
        let archive = self.archive.clone();
        let path = path.display().to_string();
        move |source| ArchiveError::Io {
            archive,
            path,
            source,
        }
    }

    /// Reserves `bytes` of the size budget for `entry`.
    fn reserve(&mut self, entry: &str, bytes: u64) -> Result<(), ArchiveError> {
        match self.written.checked_add(bytes) {
            Some(total) if total <= self.limits.max_bytes => {
                self.written = total;
                Ok(())
            }
            _ => Err(ArchiveError::TooLarge {
                archive: self.archive.clone(),
                entry: entry.to_string(),
                limit: self.limits.max_bytes,
            }),
        }
    }

    /// Creates `relative`'s parent folders below `dest`. Only this code writes below `dest` and
    /// it never creates links, so every existing component is a real folder or file.
    fn make_parents(&self, relative: &Path) -> Result<(), ArchiveError> {
        if let Some(parent) = relative.parent() {
            let dir = self.dest.join(parent);
            fs::create_dir_all(&dir).map_err(self.io(&dir))?;
        }
        Ok(())
    }

    fn write_file(
        &mut self,
        entry: &str,
        relative: &Path,
        size: u64,
        reader: &mut dyn Read,
    ) -> Result<(), ArchiveError> {
        self.reserve(entry, size)?;
        self.make_parents(relative)?;
        let path = self.dest.join(relative);
        if path.is_dir() {
            return Err(self.refuse(entry, "is a file where the archive already has a folder"));
        }
        let mut file = File::create(&path).map_err(self.io(&path))?;
        // The entry reader stops at the header's size; `take` is a second fence.
        let copied = io::copy(&mut reader.take(size), &mut file).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData | io::ErrorKind::Other => {
                self.corrupt(e)
            }
            _ => self.io(&path)(e),
        })?;
        if copied != size {
            return Err(self.corrupt(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("entry `{entry}` is cut short ({copied} of {size} bytes)"),
            )));
        }
        self.files += 1;
        Ok(())
    }

    /// Copies in the files links point at; a link to a link waits for that one.
    fn materialise(&mut self, mut links: Vec<PendingLink>) -> Result<(), ArchiveError> {
        while !links.is_empty() {
            let before = links.len();
            let mut waiting = Vec::new();
            for link in links {
                let target = self.dest.join(&link.target);
                match fs::symlink_metadata(&target) {
                    Ok(meta) if meta.is_file() => {
                        let mut source = File::open(&target).map_err(self.io(&target))?;
                        let size = meta.len();
                        self.write_file(&link.entry, &link.path, size, &mut source)?;
                    }
                    Ok(_) => {
                        return Err(self.refuse(
                            &link.entry,
                            format!(
                                "links to `{}`, a folder (only links to files are unpacked)",
                                link.target.display()
                            ),
                        ))
                    }
                    Err(_) => waiting.push(link),
                }
            }
            if waiting.len() == before {
                let link = &waiting[0];
                return Err(self.refuse(
                    &link.entry,
                    format!(
                        "links to `{}`, which is not a file in the archive",
                        link.target.display()
                    ),
                ));
            }
            links = waiting;
        }
        Ok(())
    }
}

/// An entry name for messages: lossy UTF-8 with control characters escaped (one line).
fn display_name(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).escape_debug().to_string()
}

/// `raw` as a path below the destination, or why it is not one.
fn relative_path(raw: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err("its path has a `..` component and would land outside the folder")
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("its path is absolute and would land outside the folder")
            }
        }
    }
    Ok(out)
}

/// Where a link at `link` (relative to the folder) pointing at `target` lands, relative to the
/// folder: symlink targets are relative to the link's folder, hard-link targets to the archive
/// root. `None` when it leaves the folder.
fn link_target(link: &Path, target: &Path, symbolic: bool) -> Option<PathBuf> {
    let mut parts: Vec<OsString> = Vec::new();
    if symbolic {
        if let Some(parent) = link.parent() {
            parts.extend(parent.iter().map(|p| p.to_os_string()));
        }
    }
    for component in target.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(parts.iter().collect())
}

/// Unpacks `archive` (gzip-compressed or plain tar, told apart by the magic bytes) into `dest`,
/// an existing folder the caller owns and removes on error. See the module docs for what is
/// refused.
pub fn unpack(archive: &Path, dest: &Path, limits: UnpackLimits) -> Result<Unpacked, ArchiveError> {
    let name = archive.display().to_string();
    let file = File::open(archive).map_err(|e| ArchiveError::Corrupt {
        archive: name.clone(),
        reason: format!("cannot open: {e}"),
    })?;
    let mut buffered = BufReader::new(file);
    let magic = buffered.fill_buf().map_err(|e| ArchiveError::Corrupt {
        archive: name.clone(),
        reason: e.to_string(),
    })?;
    let reader: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut unpacker = Unpacker {
        archive: name,
        dest,
        limits,
        written: 0,
        files: 0,
    };
    let mut tar = tar::Archive::new(reader);
    let entries = tar.entries().map_err(|e| unpacker.corrupt(e))?;
    let mut links = Vec::new();
    let mut seen = 0usize;
    for entry in entries {
        let mut entry = entry.map_err(|e| unpacker.corrupt(e))?;
        seen += 1;
        if seen > limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                archive: unpacker.archive.clone(),
                limit: limits.max_entries,
            });
        }
        let shown = display_name(&entry.path_bytes());
        let kind = entry.header().entry_type();
        // Headers that only describe other entries or the archive.
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            continue;
        }
        let raw = entry
            .path()
            .map_err(|e| unpacker.refuse(&shown, format!("its path is unreadable ({e})")))?;
        let relative = relative_path(&raw).map_err(|reason| unpacker.refuse(&shown, reason))?;
        if relative.as_os_str().is_empty() {
            if kind.is_dir() {
                continue; // `./`, the folder itself
            }
            return Err(unpacker.refuse(&shown, "its path is empty"));
        }
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.size();
                unpacker.write_file(&shown, &relative, size, &mut entry)?;
            }
            EntryType::Directory => {
                let dir = dest.join(&relative);
                fs::create_dir_all(&dir).map_err(unpacker.io(&dir))?;
            }
            EntryType::Symlink | EntryType::Link => {
                let symbolic = kind == EntryType::Symlink;
                let target = entry
                    .link_name()
                    .map_err(|e| {
                        unpacker.refuse(&shown, format!("its link target is unreadable ({e})"))
                    })?
                    .ok_or_else(|| unpacker.refuse(&shown, "is a link without a target"))?;
                let word = if symbolic { "symlink" } else { "hard link" };
                let resolved = link_target(&relative, &target, symbolic).ok_or_else(|| {
                    unpacker.refuse(
                        &shown,
                        format!(
                            "is a {word} to `{}`, outside the folder",
                            target.display().to_string().escape_debug()
                        ),
                    )
                })?;
                links.push(PendingLink {
                    entry: shown,
                    path: relative,
                    target: resolved,
                });
            }
            EntryType::Char | EntryType::Block => {
                return Err(unpacker.refuse(&shown, "is a device file"));
            }
            EntryType::Fifo => return Err(unpacker.refuse(&shown, "is a FIFO")),
            EntryType::GNUSparse => {
                return Err(unpacker.refuse(&shown, "is a sparse file (not supported)"))
            }
            other => {
                return Err(unpacker.refuse(
                    &shown,
                    format!("has an entry type txcat does not unpack ({other:?})"),
                ))
            }
        }
    }
    unpacker.materialise(links)?;
    Ok(Unpacked {
        files: unpacker.files,
        bytes: unpacker.written,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names() {
        for name in ["model.tar.gz", "M.TGZ", "x.tar"] {
            assert!(is_archive_name(name), "{name}");
        }
        for name in ["model.safetensors", "a.gz", "tar"] {
            assert!(!is_archive_name(name), "{name}");
        }
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_path(Path::new("./a/./b")).unwrap(),
            PathBuf::from("a/b")
        );
        assert!(relative_path(Path::new("a/../b")).is_err());
        assert!(relative_path(Path::new("/etc/passwd")).is_err());
        assert_eq!(relative_path(Path::new("./")).unwrap(), PathBuf::new());
    }

    #[test]
    fn link_targets_stay_inside() {
        let at = |link: &str, target: &str, sym: bool| {
            link_target(Path::new(link), Path::new(target), sym)
        };
        assert_eq!(at("sub/link", "../file", true), Some(PathBuf::from("file")));
        assert_eq!(at("link", "../file", true), None);
        assert_eq!(at("link", "/etc/passwd", true), None);
        assert_eq!(
            at("sub/link", "sub/file", false),
            Some(PathBuf::from("sub/file"))
        );
        assert_eq!(at("sub/link", "../x", false), None);
        assert_eq!(at("link", ".", true), None);
    }
}
