//! The members of a tar stream as GNU tar reads them: long names and link targets (GNU `L`/`K`
//! headers), pax records, and sparse files in every form GNU tar writes, each member with the
//! map of where its data goes.
//!
//! The tar crate reads headers for us but not members: it hides an old GNU sparse map in its
//! internals and hands out holes as zeros (a 1 TiB hole is 1 TiB to read), and it shows a pax
//! sparse member as a plain file holding the map, under a placeholder name. So we walk the
//! blocks ourselves and use the crate's [`Header`] and [`PaxExtensions`] for the fields.

use std::io::{self, Read};

use tar::{EntryType, GnuExtSparseHeader, GnuSparseHeader, Header, PaxExtensions};

use super::sparse::{self, DataMap, MapBuilder, MapError, MapInData, PaxSparse};

const BLOCK: usize = 512;

/// The largest long name, link target or set of pax records held in memory: pax records carry
/// xattrs, which Linux caps at 64 KiB each, so this is far beyond a real member's.
const MAX_EXTENSION: u64 = 16 << 20;

/// One member: its header, what extension headers said about it, and its data layout.
pub(super) struct Member {
    pub header: Header,
    /// The name as the archive gives it (a sparse file's real name, not its placeholder).
    pub name: Vec<u8>,
    pub link: Option<Vec<u8>>,
    /// Its pax records, in order.
    pub pax: Vec<(Vec<u8>, Vec<u8>)>,
    /// Where the member's data goes in the file it becomes.
    pub layout: DataMap,
}

impl Member {
    pub fn kind(&self) -> EntryType {
        self.header.entry_type()
    }

    /// The name for messages.
    pub fn shown_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// Why the stream could not be read as members.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    /// Not a tar stream, or one cut short.
    #[error(transparent)]
    Stream(#[from] io::Error),
    /// One member cannot be trusted; `reason` reads after its name.
    #[error("entry '{entry}' {reason}")]
    Member { entry: String, reason: String },
}

fn corrupt(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

fn truncated(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the archive ends {what}"),
    )
}

/// Reads members one after the other; a member's data is read through [`TarReader::read_data`]
/// before asking for the next member, and whatever is left of it is skipped then.
pub(super) struct TarReader<R> {
    inner: R,
    /// Data of the current member not read yet.
    unread: u64,
    /// The padding after it, up to the next block.
    padding: u64,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            unread: 0,
            padding: 0,
        }
    }

    /// The next member, or `None` at the end of the archive.
    pub fn next_member(&mut self) -> Result<Option<Member>, ReadError> {
        self.skip(self.unread + self.padding)?;
        self.unread = 0;
        self.padding = 0;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Option<Vec<u8>> = None;
        loop {
            let describes_next = long_name.is_some() || long_link.is_some() || pax.is_some();
            let block = match self.read_block()? {
                Some(block) if block.iter().any(|&b| b != 0) => block,
                _ if describes_next => {
                    return Err(truncated("after an extended header, before its member").into())
                }
                _ => return Ok(None),
            };
            check_checksum(&block)?;
            let header = Header::from_byte_slice(&block).clone();
            let slot = match header.entry_type() {
                EntryType::GNULongName => &mut long_name,
                EntryType::GNULongLink => &mut long_link,
                EntryType::XHeader => &mut pax,
                _ => return self.member(header, long_name, long_link, pax).map(Some),
            };
            if slot.is_some() {
                return Err(corrupt(format!(
                    "two {:?} headers describe the same member",
                    header.entry_type()
                ))
                .into());
            }
            let size = header.entry_size()?;
            if size > MAX_EXTENSION {
                return Err(corrupt(format!(
                    "an extended header of {size} bytes is larger than any member needs"
                ))
                .into());
            }
            let mut data = vec![0u8; size as usize];
            self.read_exact(&mut data, "inside an extended header")?;
            self.skip(padding(size))?;
            *slot = Some(data);
        }
    }

    /// Reads the current member's data; 0 at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.unread).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Ok(0) => return Err(truncated("inside a member's data")),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        self.unread -= n as u64;
        Ok(n)
    }

    fn member(
        &mut self,
        header: Header,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        pax: Option<Vec<u8>>,
    ) -> Result<Member, ReadError> {
        let pax: Vec<(Vec<u8>, Vec<u8>)> = match pax {
            Some(data) => PaxExtensions::new(&data)
                .map(|record| record.map(|r| (r.key_bytes().to_vec(), r.value_bytes().to_vec())))
                .collect::<io::Result<_>>()
                .map_err(|e| corrupt(format!("malformed pax records: {e}")))?,
            None => Vec::new(),
        };
        let record = |key: &[u8]| {
            pax.iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        // As GNU tar: pax records override GNU long names, which override the header.
        let header_name = record(b"path")
            .or_else(|| long_name.map(until_nul))
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let name = record(b"GNU.sparse.name").unwrap_or_else(|| header_name.clone());
        let link = record(b"linkpath")
            .or_else(|| long_link.map(until_nul))
            .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
        let refuse = |reason: String| ReadError::Member {
            entry: String::from_utf8_lossy(&name).into_owned(),
            reason,
        };
        let bad_map = |e: MapError| {
            refuse(format!(
                "is a sparse file whose map {e}; the tarball is corrupt: download or create it again"
            ))
        };
        let stored = match record(b"size") {
            Some(size) => std::str::from_utf8(&size)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    refuse(format!(
                        "has the pax size '{}', which is not a number; the tarball is corrupt",
                        String::from_utf8_lossy(&size)
                    ))
                })?,
            None => header.entry_size()?,
        };
        let kind = header.entry_type();
        let pax_sparse = if matches!(kind, EntryType::Regular | EntryType::Continuous) {
            sparse::pax_sparse(&pax).map_err(bad_map)?
        } else {
            None
        };
        if pax_sparse.is_some() && record(b"GNU.sparse.name").is_none() && is_placeholder(&name) {
            return Err(refuse(
                "is a sparse file without its real name (GNU.sparse.name); the tarball is corrupt"
                    .into(),
            ));
        }
        // An old GNU map ends in extension blocks between the header and the data.
        let old_gnu = if kind == EntryType::GNUSparse {
            let gnu = header.as_gnu().ok_or_else(|| {
                refuse(
                    "is an old GNU sparse file without a GNU header; the tarball is corrupt".into(),
                )
            })?;
            let size = gnu.real_size().map_err(|_| {
                bad_map(MapError::NotANumber {
                    what: "the file size",
                    value: String::from_utf8_lossy(&gnu.realsize).into_owned(),
                })
            })?;
            let mut runs = OldGnuRuns::new(size);
            runs.take(&gnu.sparse).map_err(bad_map)?;
            let mut extended = gnu.is_extended();
            while extended {
                let block = self
                    .read_block()?
                    .ok_or_else(|| truncated("inside a sparse map"))?;
                let mut ext = GnuExtSparseHeader::new();
                ext.as_mut_bytes().copy_from_slice(&block);
                runs.take(ext.sparse()).map_err(bad_map)?;
                extended = ext.is_extended();
            }
            Some(runs.builder.finish(stored).map_err(bad_map)?)
        } else {
            None
        };
        self.unread = stored;
        self.padding = padding(stored);
        let layout = match (old_gnu, pax_sparse) {
            (Some(layout), _) => layout,
            (None, Some(PaxSparse::Listed(builder))) => builder.finish(stored).map_err(bad_map)?,
            (None, Some(PaxSparse::InData { size })) => {
                let mut map = MapInData::new(size);
                let mut block = [0u8; BLOCK];
                loop {
                    if self.unread < BLOCK as u64 {
                        return Err(bad_map(MapError::Truncated));
                    }
                    self.read_exact_data(&mut block)?;
                    if map.feed(&block).map_err(bad_map)? {
                        break;
                    }
                }
                map.finish(self.unread).map_err(bad_map)?
            }
            (None, None) => DataMap::contiguous(stored),
        };
        Ok(Member {
            header,
            name,
            link,
            pax,
            layout,
        })
    }

    /// A whole block, `None` at a clean end of the stream.
    fn read_block(&mut self) -> io::Result<Option<[u8; BLOCK]>> {
        let mut block = [0u8; BLOCK];
        let mut filled = 0;
        while filled < BLOCK {
            match self.inner.read(&mut block[filled..]) {
                Ok(0) if filled == 0 => return Ok(None),
                Ok(0) => return Err(truncated("inside a header")),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Some(block))
    }

    fn read_exact(&mut self, buf: &mut [u8], place: &str) -> io::Result<()> {
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                truncated(place)
            } else {
                e
            }
        })
    }

    fn read_exact_data(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            filled += self.read_data(&mut buf[filled..])?;
        }
        Ok(())
    }

    fn skip(&mut self, amount: u64) -> io::Result<()> {
        let skipped = io::copy(&mut (&mut self.inner).take(amount), &mut io::sink())?;
        if skipped < amount {
            return Err(truncated("inside a member's data"));
        }
        Ok(())
    }
}

/// The runs of an old GNU map, which ends at its first empty entry.
struct OldGnuRuns {
    builder: MapBuilder,
    ended: bool,
}

impl OldGnuRuns {
    fn new(size: u64) -> Self {
        Self {
            builder: MapBuilder::new(size),
            ended: false,
        }
    }

    fn take(&mut self, entries: &[GnuSparseHeader]) -> Result<(), MapError> {
        for entry in entries {
            if entry.is_empty() {
                self.ended = true;
                continue;
            }
            if self.ended {
                return Err(MapError::AfterEnd);
            }
            let field = |value: io::Result<u64>, raw: &[u8], what| {
                value.map_err(|_| MapError::NotANumber {
                    what,
                    value: String::from_utf8_lossy(raw).trim_end_matches('\0').into(),
                })
            };
            let offset = field(entry.offset(), &entry.offset, "an offset")?;
            let len = field(entry.length(), &entry.numbytes, "a length")?;
            self.builder.push(offset, len)?;
        }
        Ok(())
    }
}

/// Bytes from the end of `size` bytes of data to the next block.
fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// A GNU long name or link target: a C string in its data.
fn until_nul(mut data: Vec<u8>) -> Vec<u8> {
    if let Some(end) = data.iter().position(|&b| b == 0) {
        data.truncate(end);
    }
    data
}

/// The name GNU tar gives a PAX sparse member's header (`DIR/GNUSparseFile.PID/NAME`), which
/// must never become a file of the stage.
fn is_placeholder(name: &[u8]) -> bool {
    name.split(|&b| b == b'/')
        .any(|component| component.starts_with(b"GNUSparseFile."))
}

/// The header's checksum, as GNU tar accepts it: the sum of its bytes with the checksum field
/// taken as spaces, the bytes read unsigned or (as some old tars wrote them) signed.
fn check_checksum(block: &[u8; BLOCK]) -> io::Result<()> {
    let header = Header::from_byte_slice(block);
    let stored = header
        .cksum()
        .map_err(|_| corrupt("a header has no valid checksum: this is not a tar archive"))?;
    let field = 148..156;
    let (unsigned, signed) = block
        .iter()
        .enumerate()
        .fold((0u32, 0i32), |(u, s), (i, &b)| {
            let b = if field.contains(&i) { b' ' } else { b };
            (u + u32::from(b), s + i32::from(b as i8))
        });
    if stored == unsigned || i64::from(stored) == i64::from(signed) {
        Ok(())
    } else {
        Err(corrupt("a header's checksum does not match its contents"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gnu_header(kind: EntryType, name: &str, size: u64) -> Header {
        let mut header = Header::new_gnu();
        header.set_entry_type(kind);
        header.set_path(name).unwrap();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_cksum();
        header
    }

    fn padded(data: &[u8]) -> Vec<u8> {
        let mut out = data.to_vec();
        out.resize(data.len() + padding(data.len() as u64) as usize, 0);
        out
    }

    /// Every member's name, layout and data, read the way the extractor reads them.
    fn read_all(archive: &[u8]) -> Result<Vec<(String, DataMap, Vec<u8>)>, ReadError> {
        let mut reader = TarReader::new(archive);
        let mut members = Vec::new();
        while let Some(member) = reader.next_member()? {
            let mut data = Vec::new();
            let mut buf = [0u8; 100];
            loop {
                let n = reader.read_data(&mut buf)?;
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
            }
            members.push((member.shown_name(), member.layout, data));
        }
        Ok(members)
    }

    /// An old GNU sparse member with `runs` (offset, data), more than a header holds.
    fn old_gnu_sparse(name: &str, size: u64, runs: &[(u64, &[u8])]) -> Vec<u8> {
        let stored: usize = runs.iter().map(|(_, d)| d.len()).sum();
        let mut header = gnu_header(EntryType::GNUSparse, name, stored as u64);
        let gnu = header.as_gnu_mut().unwrap();
        gnu.set_real_size(size);
        let (first, rest) = runs.split_at(runs.len().min(4));
        for (slot, (offset, data)) in gnu.sparse.iter_mut().zip(first) {
            slot.set_offset(*offset);
            slot.set_length(data.len() as u64);
        }
        gnu.set_is_extended(!rest.is_empty());
        header.set_cksum();
        let mut out = header.as_bytes().to_vec();
        let chunks: Vec<&[(u64, &[u8])]> = rest.chunks(21).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut ext = GnuExtSparseHeader::new();
            for (slot, (offset, data)) in ext.sparse_mut().iter_mut().zip(chunk.iter()) {
                slot.set_offset(*offset);
                slot.set_length(data.len() as u64);
            }
            ext.set_is_extended(i + 1 < chunks.len());
            out.extend_from_slice(ext.as_bytes());
        }
        let data: Vec<u8> = runs.iter().flat_map(|(_, d)| d.iter().copied()).collect();
        out.extend(padded(&data));
        out
    }

    fn end_of_archive(mut archive: Vec<u8>) -> Vec<u8> {
        archive.extend_from_slice(&[0u8; 1024]);
        archive
    }

    #[test]
    fn old_gnu_map_beyond_the_header_comes_from_its_extension_blocks() {
        let runs: Vec<(u64, Vec<u8>)> = (0..30u64)
            .map(|i| (i << 30, vec![b'a' + i as u8; 10]))
            .collect();
        let borrowed: Vec<(u64, &[u8])> = runs.iter().map(|(o, d)| (*o, d.as_slice())).collect();
        let mut archive = old_gnu_sparse("var/sparse", 31 << 30, &borrowed);
        let after = gnu_header(EntryType::Regular, "etc/after", 3);
        archive.extend_from_slice(after.as_bytes());
        archive.extend(padded(b"end"));
        let members = read_all(&end_of_archive(archive)).unwrap();
        assert_eq!(members.len(), 2);
        let (name, layout, data) = &members[0];
        assert_eq!(name, "var/sparse");
        assert_eq!(layout.size, 31 << 30);
        assert_eq!(layout.runs.len(), 30);
        assert_eq!(
            layout.runs[29],
            sparse::Run {
                offset: 29 << 30,
                len: 10
            }
        );
        assert_eq!(data.len(), 300, "holes are not read");
        assert_eq!(&data[290..], &[b'a' + 29; 10]);
        assert_eq!(members[1].0, "etc/after");
        assert_eq!(members[1].2, b"end");
    }

    #[test]
    fn old_gnu_map_that_overlaps_is_refused_naming_the_member() {
        let archive = old_gnu_sparse("usr/lib/bad", 1 << 20, &[(4096, b"xx"), (4097, b"yy")]);
        let err = read_all(&end_of_archive(archive)).unwrap_err();
        let ReadError::Member { entry, reason } = &err else {
            panic!("{err}");
        };
        assert_eq!(entry, "usr/lib/bad");
        assert!(reason.contains("overlap"), "{reason}");
    }

    #[test]
    fn pax_1_0_member_gets_its_real_name_and_map_from_its_data() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = Header::new_ustar();
        header.set_entry_type(EntryType::Regular);
        header.set_mode(0o600);
        let mut data = padded(b"2\n0\n3\n8000\n2\n");
        data.extend_from_slice(b"abcde");
        header.set_size(data.len() as u64);
        builder
            .append_pax_extensions([
                ("GNU.sparse.major", &b"1"[..]),
                ("GNU.sparse.minor", b"0"),
                ("GNU.sparse.name", b"srv/disk.img"),
                ("GNU.sparse.realsize", b"8002"),
            ])
            .unwrap();
        builder
            .append_data(&mut header, "GNUSparseFile.77/disk.img", &data[..])
            .unwrap();
        let members = read_all(&builder.into_inner().unwrap()).unwrap();
        let (name, layout, data) = &members[0];
        assert_eq!(name, "srv/disk.img");
        assert_eq!(
            layout.runs,
            [
                sparse::Run { offset: 0, len: 3 },
                sparse::Run {
                    offset: 8000,
                    len: 2
                }
            ]
        );
        assert_eq!(layout.size, 8002);
        assert_eq!(data, b"abcde", "the map is not data");
    }

    #[test]
    fn pax_sparse_member_without_its_real_name_is_refused() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = Header::new_ustar();
        header.set_entry_type(EntryType::Regular);
        header.set_size(3);
        builder
            .append_pax_extensions([("GNU.sparse.size", &b"10"[..]), ("GNU.sparse.map", b"0,3")])
            .unwrap();
        builder
            .append_data(&mut header, "GNUSparseFile.9/x", &b"abc"[..])
            .unwrap();
        let err = read_all(&builder.into_inner().unwrap()).unwrap_err();
        assert!(err.to_string().contains("real name"), "{err}");
    }

    #[test]
    fn cut_archives_are_errors_not_short_files() {
        let header = gnu_header(EntryType::Regular, "etc/hostname", 100);
        let mut archive = header.as_bytes().to_vec();
        archive.extend_from_slice(b"gentoo");
        let err = read_all(&archive).unwrap_err();
        assert!(
            matches!(&err, ReadError::Stream(e) if e.kind() == io::ErrorKind::UnexpectedEof),
            "{err}"
        );
        let mut bad = gnu_header(EntryType::Regular, "etc/hostname", 0);
        bad.as_mut_bytes()[0] = b'E';
        let err = read_all(&end_of_archive(bad.as_bytes().to_vec())).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }
}
