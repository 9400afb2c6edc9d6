//! Writing a fetch's spool file: what arrives is gathered into large writes made
//! around the page cache (`O_DIRECT`, where the file system allows it: copying a blob
//! into the page cache costs more than receiving it, and a pull should not wait for
//! that), and readers of the file are told how far it is written.

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

/// Bytes per write.
const WRITE_SIZE: usize = 1024 * 1024;
/// The alignment `O_DIRECT` writes need (the largest block size in common use).
const ALIGN: usize = 4096;

/// Writes what `pieces` yields to `file` (at `path`) from its start, calling `written`
/// with the file's length after every write; the bytes written in all. A piece is
/// written once it fills a write or nothing more is waiting, so readers do not wait for
/// a full write when the upstream is slow.
pub(crate) fn write(
    pieces: tokio::sync::mpsc::Receiver<Arc<[Bytes]>>,
    file: File,
    path: &Path,
    written: impl FnMut(u64),
) -> io::Result<u64> {
    write_to(&Target::open(file, path), pieces, written)
}

fn write_to(
    target: &Target,
    mut pieces: tokio::sync::mpsc::Receiver<Arc<[Bytes]>>,
    mut written: impl FnMut(u64),
) -> io::Result<u64> {
    let mut staging = Buffer::new();
    let mut offset = 0;
    // Writes what is staged (its aligned part while writes must be aligned, unless
    // `last`); what is left moves to the front.
    let mut flush = |staging: &mut Buffer, last: bool| -> io::Result<()> {
        let len = if target.aligned() && !last {
            staging.len / ALIGN * ALIGN
        } else {
            staging.len
        };
        if len == 0 {
            return Ok(());
        }
        target.write(&staging.data()[..len], offset)?;
        offset += len as u64;
        staging.consume(len);
        written(offset);
        Ok(())
    };
    while let Some(piece) = pieces.blocking_recv() {
        for read in piece.iter() {
            let mut rest = &read[..];
            while !rest.is_empty() {
                let take = staging.append(rest);
                rest = &rest[take..];
                if staging.len == WRITE_SIZE {
                    flush(&mut staging, false)?;
                }
            }
        }
        if pieces.is_empty() {
            flush(&mut staging, false)?;
        }
    }
    flush(&mut staging, true)?;
    Ok(offset)
}

/// The spool file, and whether writes around the page cache still work on it.
struct Target {
    file: File,
    direct: Option<File>,
    around_cache: Cell<bool>,
}

impl Target {
    fn open(file: File, path: &Path) -> Target {
        let direct = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(path)
            .ok();
        let around_cache = Cell::new(direct.is_some());
        Target {
            file,
            direct,
            around_cache,
        }
    }

    /// Whether writes must be aligned (only the last may not be).
    fn aligned(&self) -> bool {
        self.around_cache.get()
    }

    fn write(&self, data: &[u8], offset: u64) -> io::Result<()> {
        if let Some(direct) = self.direct.as_ref().filter(|_| self.aligned()) {
            if data.len().is_multiple_of(ALIGN) {
                match direct.write_all_at(data, offset) {
                    Ok(()) => return Ok(()),
                    // A file system that takes the flag but not the writes: through the
                    // cache from now on.
                    Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                        self.around_cache.set(false);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        self.file.write_all_at(data, offset)
    }
}

/// A `WRITE_SIZE` buffer aligned for `O_DIRECT`, and how much of it is filled.
struct Buffer {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl Buffer {
    fn new() -> Buffer {
        let raw = vec![0u8; WRITE_SIZE + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        Buffer { raw, start, len: 0 }
    }

    /// Copies as much of `bytes` as fits; how much that was.
    fn append(&mut self, bytes: &[u8]) -> usize {
        let space = &mut self.raw[self.start + self.len..self.start + WRITE_SIZE];
        let take = bytes.len().min(space.len());
        space[..take].copy_from_slice(&bytes[..take]);
        self.len += take;
        take
    }

    fn data(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    /// Drops the first `n` bytes (moving the rest to the front).
    fn consume(&mut self, n: usize) {
        let start = self.start;
        self.raw.copy_within(start + n..start + self.len, start);
        self.len -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that differ at every offset, so a misplaced write shows.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4099) as u8).collect()
    }

    /// Writes `data` cut into `reads` (lengths, cycled) gathered `per_piece` reads to a
    /// piece, into a fresh file in `dir` (around the cache if `direct`); the file, what
    /// `write` returned, and every length reported.
    fn spool(
        dir: &Path,
        direct: bool,
        data: &[u8],
        reads: &[usize],
        per_piece: usize,
    ) -> (Vec<u8>, u64, Vec<u64>) {
        let path = dir.join("spool");
        let file = File::create_new(&path).unwrap();
        let mut target = Target::open(file, &path);
        if !direct {
            target.direct = None;
            target.around_cache = Cell::new(false);
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut cuts = Vec::new();
        let (mut at, mut i) = (0, 0);
        while at < data.len() {
            let len = reads[i % reads.len()].min(data.len() - at);
            cuts.push(Bytes::copy_from_slice(&data[at..at + len]));
            at += len;
            i += 1;
        }
        let sender = std::thread::spawn(move || {
            for piece in cuts.chunks(per_piece) {
                tx.blocking_send(Arc::from(piece.to_vec())).unwrap();
            }
        });
        let mut reports = Vec::new();
        let written = write_to(&target, rx, |n| {
            // Reports only grow, and the file is that long already.
            assert!(n > reports.last().copied().unwrap_or(0));
            assert!(std::fs::metadata(&path).unwrap().len() >= n);
            reports.push(n);
        })
        .unwrap();
        sender.join().unwrap();
        let content = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        (content, written, reports)
    }

    /// A directory on the checkout's file system (`/tmp` may be tmpfs, which handles
    /// `O_DIRECT` its own way).
    fn test_dir() -> tempfile::TempDir {
        tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap()
    }

    fn check(direct: bool) {
        let dir = test_dir();
        let sizes = [
            0,
            1,
            ALIGN - 1,
            ALIGN + 1,
            WRITE_SIZE,
            WRITE_SIZE + 1,
            3 * WRITE_SIZE + 12_345,
        ];
        for size in sizes {
            let data = pattern(size);
            for (reads, per_piece) in [
                (&[65_536][..], 4),
                (&[1, 4095, 100_000, 7][..], 3),
                (&[WRITE_SIZE + 3][..], 1),
            ] {
                let (content, written, reports) =
                    spool(dir.path(), direct, &data, reads, per_piece);
                assert_eq!(written, size as u64, "size {size}");
                assert!(content == data, "size {size}: the file differs");
                assert_eq!(reports.last().copied().unwrap_or(0), size as u64);
            }
        }
    }

    #[test]
    fn writes_every_byte_in_place_around_the_cache() {
        check(true);
    }

    #[test]
    fn writes_every_byte_in_place_through_the_cache() {
        check(false);
    }

    /// A write the file system refuses around the cache (here: from an unaligned
    /// buffer, EINVAL) goes through the cache, and so does every later one.
    #[test]
    fn falls_back_to_the_cache_when_refused() {
        let dir = test_dir();
        let path = dir.path().join("spool");
        let target = Target::open(File::create_new(&path).unwrap(), &path);
        assert!(
            target.aligned(),
            "the checkout's file system must take O_DIRECT (ext4, xfs)"
        );
        let data = pattern(2 * ALIGN + 1);
        let unaligned = &data[1..];
        target.write(unaligned, 0).unwrap();
        assert!(!target.aligned());
        assert_eq!(std::fs::read(&path).unwrap(), unaligned);
    }
}
