//! The names of rotated files: how they are made, how quelog recognises its own (only
//! those are ever renamed, compressed or deleted), and which is newer.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;

/// How rotated files are named. The live file always keeps its configured path.
///
/// * [`Naming::Dates`] (the default): `app.2026-11-22.log`, then `app.2026-11-22.1.log`,
///   `app.2026-11-22.2.log` for more files of the same day (size rotation), and
///   `app.2026-11-22T13.log` with [`crate::Rotation::hourly`]. The date is the period
///   the file was started in. A rotated file is renamed once and never again, so a
///   shipper or the compressor never chases a moving name, and a rotation is one
///   rename however many files are kept.
/// * [`Naming::Numbers`]: logrotate's style, `app.log.1` the newest, then `app.log.2`
///   and so on: every rotation renames each kept file one number up (from the oldest
///   down, so no name is ever overwritten), each rename followed by a directory
///   sync, so bound it with [`crate::Rotation::keep`].
///
/// With compression a `.gz` follows either name. Ordering is by date then number
/// (dates), or by number (numbers, smaller is newer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Naming {
    /// `app.2026-11-22.log`, `app.2026-11-22.1.log` (the default).
    #[default]
    Dates,
    /// `app.log.1`, `app.log.2`, ... (logrotate's default style).
    Numbers,
}

/// Where a rotated file stands among its output's rotated files: greater is newer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Rank {
    /// The period stamp (dates; empty for numbers).
    pub(super) stamp: String,
    /// For dates the number after the stamp (0 for none); for numbers `u32::MAX -
    /// number`, so that `app.log.1` ranks above `app.log.2`.
    pub(super) order: u32,
}

/// One rotated file found on disk.
#[derive(Debug, Clone)]
pub(super) struct Rotated {
    pub(super) path: PathBuf,
    pub(super) rank: Rank,
    pub(super) compressed: bool,
}

/// The naming of one output's files.
#[derive(Debug, Clone)]
pub(super) struct Names {
    pub(super) dir: PathBuf,
    /// The live file's name: `app.log`.
    file_name: String,
    /// `app` and `.log` (empty when the name has no extension).
    stem: String,
    ext: String,
    pub(super) naming: Naming,
}

/// `2026-11-22` or `2026-11-22T13`.
pub(super) fn stamp(period_start: NaiveDateTime, hourly: bool) -> String {
    let format = if hourly { "%Y-%m-%dT%H" } else { "%Y-%m-%d" };
    period_start.format(format).to_string()
}

/// The period start a stamp names (`None` for a number's empty stamp).
pub(super) fn parse_stamp(text: &str) -> Option<NaiveDateTime> {
    let (date, hour) = match text.split_once('T') {
        Some((date, hour)) => (date, hour.parse().ok()?),
        None => (text, 0),
    };
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .ok()?
        .and_hms_opt(hour, 0, 0)
}

fn is_stamp(text: &str) -> bool {
    let (date, hour) = match text.split_once('T') {
        Some((date, hour)) => (date, Some(hour)),
        None => (text, None),
    };
    let date_ok = date.len() == 10 && chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok();
    let hour_ok =
        hour.is_none_or(|h| h.len() == 2 && h.bytes().all(|b| b.is_ascii_digit()) && h < "24");
    date_ok && hour_ok
}

/// A number as quelog writes it: digits, no leading zero, not 0.
fn parse_number(text: &str) -> Option<u32> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || text.starts_with('0') {
        return None;
    }
    text.parse().ok()
}

impl Names {
    pub(super) fn new(path: &Path, naming: Naming) -> Names {
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (stem, ext) = match file_name.rfind('.') {
            Some(dot) if dot > 0 => (file_name[..dot].to_owned(), file_name[dot..].to_owned()),
            _ => (file_name.clone(), String::new()),
        };
        Names {
            dir,
            file_name,
            stem,
            ext,
            naming,
        }
    }

    /// The dated name for `stamp` and `number` (0: none).
    pub(super) fn dated(&self, stamp: &str, number: u32) -> PathBuf {
        let name = if number == 0 {
            format!("{}.{stamp}{}", self.stem, self.ext)
        } else {
            format!("{}.{stamp}.{number}{}", self.stem, self.ext)
        };
        self.dir.join(name)
    }

    /// `app.log.<number>`.
    pub(super) fn numbered(&self, number: u32) -> PathBuf {
        self.dir.join(format!("{}.{number}", self.file_name))
    }

    /// The compressor's temporary file for the rotated file with inode `ino`: hidden,
    /// and recognisable as this output's so a crash's leftover is cleaned up.
    #[cfg_attr(not(feature = "compression"), allow(dead_code))]
    pub(super) fn temp(&self, ino: u64) -> PathBuf {
        self.dir.join(format!(".{}.gz-{ino}.tmp", self.file_name))
    }

    /// Whether `name` is one of this output's compressor temporaries.
    #[cfg_attr(not(feature = "compression"), allow(dead_code))]
    pub(super) fn is_temp(&self, name: &str) -> bool {
        let prefix = format!(".{}.gz-", self.file_name);
        name.strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .is_some_and(|ino| !ino.is_empty() && ino.bytes().all(|b| b.is_ascii_digit()))
    }

    /// Whether `name` is a rotated file of this output, and where it ranks.
    pub(super) fn parse(&self, name: &str) -> Option<(Rank, bool)> {
        let (name, compressed) = match name.strip_suffix(".gz") {
            Some(plain) => (plain, true),
            None => (name, false),
        };
        let rank = match self.naming {
            Naming::Numbers => {
                let number = name
                    .strip_prefix(self.file_name.as_str())?
                    .strip_prefix('.')
                    .and_then(parse_number)?;
                Rank {
                    stamp: String::new(),
                    order: u32::MAX - number,
                }
            }
            Naming::Dates => {
                let middle = name
                    .strip_prefix(self.stem.as_str())?
                    .strip_prefix('.')?
                    .strip_suffix(self.ext.as_str())?;
                let (stamp, number) = match middle.rsplit_once('.') {
                    Some((stamp, number)) => (stamp, parse_number(number)?),
                    None => (middle, 0),
                };
                if !is_stamp(stamp) {
                    return None;
                }
                Rank {
                    stamp: stamp.to_owned(),
                    order: number,
                }
            }
        };
        Some((rank, compressed))
    }

    /// This output's rotated files, newest first. Other files in the directory are
    /// not looked at again.
    pub(super) fn list(&self) -> io::Result<Vec<Rotated>> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Ok(name) = std::str::from_utf8(name.as_bytes()) else {
                continue;
            };
            if let Some((rank, compressed)) = self.parse(name) {
                found.push(Rotated {
                    path: entry.path(),
                    rank,
                    compressed,
                });
            }
        }
        found.sort_by(|a, b| b.rank.cmp(&a.rank).then(a.compressed.cmp(&b.compressed)));
        Ok(found)
    }

    /// The number a new dated file for `stamp` gets: one past the highest of that
    /// stamp (so the order stays right even after files were deleted), 0 if none.
    pub(super) fn next_dated_number(&self, existing: &[Rotated], stamp: &str) -> u32 {
        existing
            .iter()
            .filter(|r| r.rank.stamp == stamp)
            .map(|r| r.rank.order.saturating_add(1))
            .max()
            .unwrap_or(0)
    }
}

/// Renames `from` to `to` unless `to` exists (`renameat2` with `RENAME_NOREPLACE`): an
/// existing file is never overwritten, however it appeared.
pub(super) fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    let from_c = CString::new(from.as_os_str().as_bytes())?;
    let to_c = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both strings are valid NUL-terminated paths for the call's duration;
    // renameat2 only reads them.
    let result = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if result == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        // A filesystem without RENAME_NOREPLACE: check, then rename (racy only against
        // another program creating that very name in between).
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            if std::fs::symlink_metadata(to).is_ok() {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            std::fs::rename(from, to)
        }
        _ => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_rank() {
        let names = Names::new(Path::new("logs/app.log"), Naming::Dates);
        let day = names.dated("2026-11-22", 0);
        assert_eq!(day, Path::new("logs/app.2026-11-22.log"));
        let second = names.dated("2026-11-22", 1);
        assert_eq!(second, Path::new("logs/app.2026-11-22.1.log"));
        let parse = |p: &Path| names.parse(p.file_name().unwrap().to_str().unwrap());
        let (a, _) = parse(&day).unwrap();
        let (b, _) = parse(&second).unwrap();
        assert!(b > a);
        let (c, gz) = names.parse("app.2026-11-23T01.log.gz").unwrap();
        assert!(gz && c > b);
        for foreign in [
            "app.log",
            "app.log.1",
            "app.2026-13-01.log",
            "app.2026-11-22.01.log",
            "app.2026-11-22.0.log",
            "app.2026-11-22.log.bak",
            "other.2026-11-22.log",
            "app.x.2026-11-22.log",
            "app.2026-11-22T24.log",
        ] {
            assert!(names.parse(foreign).is_none(), "{foreign}");
        }
    }

    #[test]
    fn numbers_round_trip_and_rank() {
        let names = Names::new(Path::new("app.log"), Naming::Numbers);
        assert_eq!(names.numbered(3), Path::new("./app.log.3"));
        let (one, _) = names.parse("app.log.1").unwrap();
        let (two, gz) = names.parse("app.log.2.gz").unwrap();
        assert!(one > two && gz);
        for foreign in [
            "app.log",
            "app.log.0",
            "app.log.01",
            "app.log.x",
            "app.logs.1",
        ] {
            assert!(names.parse(foreign).is_none(), "{foreign}");
        }
        assert!(names.is_temp(".app.log.gz-1234.tmp"));
        assert!(!names.is_temp(".app.log.gz-.tmp") && !names.is_temp(".other.gz-1.tmp"));
    }
}
