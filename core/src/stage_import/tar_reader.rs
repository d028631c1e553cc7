//! The members of a tar stream as GNU tar reads them: long names and link targets (GNU `L`/`K`
//! headers), pax records (a member's own and a global header's), and sparse files in every form
//! GNU tar writes, each member with the map of where its data goes.
//!
//! The tar crate reads headers for us but not members: it hides an old GNU sparse map in its
//! internals and hands out holes as zeros (a 1 TiB hole is 1 TiB to read), and it shows a pax
//! sparse member as a plain file holding the map, under a placeholder name. So we walk the
//! blocks ourselves and use the crate's [`Header`] for the layout of a block.
//!
//! Every number in a header or a record is the archive's word, so each is read as GNU tar reads
//! it and refused, naming the member, when it is out of the range of what it stands for; no sum
//! of two of them is formed unchecked.

use std::io::{self, Read};

use rustix::fs::Timespec;
use tar::{EntryType, GnuExtSparseHeader, GnuSparseHeader, Header};

use super::quoting::escape;
use super::sparse::{self, DataMap, MapBuilder, MapError, MapInData, PaxSparse};

const BLOCK: usize = 512;

/// The largest long name, link target or set of pax records held in memory: pax records carry
/// xattrs, which Linux caps at 64 KiB each, so this is far beyond a real member's.
const MAX_EXTENSION: u64 = 16 << 20;

/// The largest size an archive may give, as GNU tar reads it (an `off_t`).
const MAX_SIZE: u64 = i64::MAX as u64;

/// pax records, in the order they were written.
type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// One member: its header, what extension headers said about it, and its data layout.
pub(super) struct Member {
    pub header: Header,
    /// The name as the archive gives it (a sparse file's real name, not its placeholder).
    pub name: Vec<u8>,
    pub link: Option<Vec<u8>>,
    /// Its own pax records, in order. A global header's records are already applied to the
    /// name, the link, the size and [`Member::attributes`].
    pub pax: Records,
    pub attributes: Attributes,
    /// Where the member's data goes in the file it becomes.
    pub layout: DataMap,
}

/// The owner, mode and time the entry gets: the header's, unless pax records override them.
pub(super) struct Attributes {
    /// Permission bits, with setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Timespec,
}

impl Member {
    pub fn kind(&self) -> EntryType {
        self.header.entry_type()
    }

    /// The name for messages, escaped: it comes from the archive.
    pub fn shown_name(&self) -> String {
        escape(&self.name)
    }

    /// A device node's major and minor numbers; the reason (which reads after the name) when
    /// the header has none that are valid.
    pub fn device(&self) -> Result<(u32, u32), String> {
        let fields = match (self.header.as_ustar(), self.header.as_gnu()) {
            (Some(ustar), _) => Some((ustar.dev_major, ustar.dev_minor)),
            (None, Some(gnu)) => Some((gnu.dev_major, gnu.dev_minor)),
            (None, None) => None,
        };
        let number = |field: &[u8]| header_number(field).and_then(|n| u32::try_from(n).ok());
        match fields {
            Some((major, minor)) => match (number(&major), number(&minor)) {
                (Some(major), Some(minor)) => Ok((major, minor)),
                _ => Err(format!(
                    "is a device without valid numbers ('{}', '{}'){CORRUPT}",
                    shown_field(&major),
                    shown_field(&minor)
                )),
            },
            None => Err(format!(
                "is a device in an old tar header, which has no device numbers{CORRUPT}"
            )),
        }
    }
}

/// Why the stream could not be read as members.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    /// Not a tar stream, or one cut short.
    #[error(transparent)]
    Stream(#[from] io::Error),
    /// One member cannot be trusted; `reason` reads after its name, which is escaped.
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
    /// The records of the last pax global header, which apply to every member after it unless
    /// the member's own records override them. As with GNU tar, each global header replaces
    /// the set whole, and only the keys we honour are kept.
    global: Records,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            unread: 0,
            padding: 0,
            global: Vec::new(),
        }
    }

    /// The next member, or `None` at the end of the archive.
    pub fn next_member(&mut self) -> Result<Option<Member>, ReadError> {
        // Skipped one after the other: both are the archive's numbers, their sum is not ours.
        self.skip(self.unread)?;
        self.skip(self.padding)?;
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
                EntryType::XGlobalHeader => {
                    let data = self.extension(&header)?;
                    self.global = global_records(&data)?;
                    continue;
                }
                _ => return self.member(header, long_name, long_link, pax).map(Some),
            };
            if slot.is_some() {
                return Err(corrupt(format!(
                    "two {:?} headers describe the same member",
                    header.entry_type()
                ))
                .into());
            }
            *slot = Some(self.extension(&header)?);
        }
    }

    /// The data of an extended header (a long name, pax records), read whole.
    fn extension(&mut self, header: &Header) -> io::Result<Vec<u8>> {
        let field = &header.as_old().size;
        let size = header_number(field)
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| {
                corrupt(format!(
                    "an extended header has no valid size ('{}')",
                    shown_field(field)
                ))
            })?;
        if size > MAX_EXTENSION {
            return Err(corrupt(format!(
                "an extended header of {size} bytes is larger than any member needs"
            )));
        }
        // Grown as the data comes, not allocated from the header's word: a header that claims
        // 16 MiB in a stream that ends sooner costs only what the stream holds.
        let mut data = Vec::new();
        (&mut self.inner).take(size).read_to_end(&mut data)?;
        if (data.len() as u64) < size {
            return Err(truncated("inside an extended header"));
        }
        self.skip(padding(size))?;
        Ok(data)
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
        let pax = match pax {
            Some(data) => {
                parse_records(&data).map_err(|e| corrupt(format!("malformed pax records: {e}")))?
            }
            None => Vec::new(),
        };
        // As GNU tar: the member's pax records override the global header's, which override
        // GNU long names, which override the header.
        let record = |key: &[u8]| {
            last(&pax, key)
                .or_else(|| last(&self.global, key))
                .map(<[u8]>::to_vec)
        };
        let header_name = record(b"path")
            .or_else(|| long_name.map(until_nul))
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let name = last(&pax, b"GNU.sparse.name")
            .map(<[u8]>::to_vec)
            .unwrap_or_else(|| header_name.clone());
        let link = record(b"linkpath")
            .or_else(|| long_link.map(until_nul))
            .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
        let refuse = |reason: String| ReadError::Member {
            entry: escape(&name),
            reason,
        };
        let bad_map = |e: MapError| refuse(format!("is a sparse file whose map {e}{CORRUPT}"));
        let old = header.as_old();
        let stored = match record(b"size") {
            Some(size) => pax_number(&size, MAX_SIZE)
                .map_err(|problem| refuse(bad_record("size", &size, &problem)))?,
            None => header_field(&old.size, "size", 0, MAX_SIZE.into()).map_err(refuse)? as u64,
        };
        let attributes = Attributes {
            mode: header_field(&old.mode, "mode", 0, u32::MAX.into()).map_err(refuse)? as u32
                & 0o7777,
            uid: id(record(b"uid"), &old.uid, "uid").map_err(refuse)?,
            gid: id(record(b"gid"), &old.gid, "gid").map_err(refuse)?,
            mtime: match record(b"mtime") {
                Some(time) => pax_time(&time)
                    .map_err(|problem| refuse(bad_record("mtime", &time, problem)))?,
                None => Timespec {
                    tv_sec: header_field(&old.mtime, "mtime", i64::MIN.into(), i64::MAX.into())
                        .map_err(refuse)? as i64,
                    tv_nsec: 0,
                },
            },
        };
        let kind = header.entry_type();
        let pax_sparse = if matches!(kind, EntryType::Regular | EntryType::Continuous) {
            sparse::pax_sparse(&pax, stored).map_err(bad_map)?
        } else {
            None
        };
        if pax_sparse.is_some() && last(&pax, b"GNU.sparse.name").is_none() && is_placeholder(&name)
        {
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
            let size = header_number(&gnu.realsize)
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| {
                    bad_map(MapError::NotANumber {
                        what: "the file size",
                        value: shown_field(&gnu.realsize),
                    })
                })?;
            let mut runs = OldGnuRuns::new(size, stored).map_err(bad_map)?;
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
                let mut map = MapInData::new(size, stored).map_err(bad_map)?;
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
            attributes,
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

/// The last record with `key`: a later record overrides an earlier one, as pax says.
fn last<'a>(records: &'a Records, key: &[u8]) -> Option<&'a [u8]> {
    records
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_slice())
}

/// pax records: `LENGTH KEY=VALUE\n`, where LENGTH counts the whole record. The length, not a
/// line break, ends a record: an xattr's value is binary and may hold any byte.
fn parse_records(data: &[u8]) -> Result<Records, String> {
    let mut records = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let malformed = |what: &str| format!("{what} at byte {}", data.len() - rest.len());
        let space = rest
            .iter()
            .take(20)
            .position(|&b| b == b' ')
            .ok_or_else(|| malformed("a record without a length"))?;
        let len = std::str::from_utf8(&rest[..space])
            .ok()
            .filter(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<usize>().ok())
            .ok_or_else(|| malformed("a record without a length"))?;
        if len <= space + 1 || len > rest.len() {
            return Err(malformed("a record whose length is not its own"));
        }
        let (record, next) = rest.split_at(len);
        let body = record[space + 1..]
            .strip_suffix(b"\n")
            .ok_or_else(|| malformed("a record that does not end in a line break"))?;
        let equals = body
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| malformed("a record without '='"))?;
        records.push((body[..equals].to_vec(), body[equals + 1..].to_vec()));
        rest = next;
    }
    Ok(records)
}

/// The records of a global header that apply to the members after it: the keys we honour, as
/// GNU tar applies them (a global `path` names every member so). Keys we do not use
/// (`comment`, which `git archive` writes, `atime`, `uname`, …) are dropped. A sparse map or an
/// xattr describes one file, and GNU tar cannot apply either from a global header: refused.
fn global_records(data: &[u8]) -> io::Result<Records> {
    let records =
        parse_records(data).map_err(|e| corrupt(format!("malformed pax global header: {e}")))?;
    if let Some((key, _)) = records
        .iter()
        .find(|(key, _)| key.starts_with(b"GNU.sparse.") || key.starts_with(b"SCHILY.xattr."))
    {
        return Err(corrupt(format!(
            "a pax global header sets '{}' for every member after it, but it describes one file",
            escape(key)
        )));
    }
    const HONOURED: [&[u8]; 6] = [b"path", b"linkpath", b"size", b"mtime", b"uid", b"gid"];
    Ok(records
        .into_iter()
        .filter(|(key, _)| HONOURED.contains(&key.as_slice()))
        .collect())
}

/// The runs of an old GNU map, which ends at its first empty entry.
struct OldGnuRuns {
    builder: MapBuilder,
    ended: bool,
}

impl OldGnuRuns {
    fn new(size: u64, stored: u64) -> Result<Self, MapError> {
        Ok(Self {
            builder: MapBuilder::new(size, stored)?,
            ended: false,
        })
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
            let field = |raw: &[u8], what| {
                header_number(raw)
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| MapError::NotANumber {
                        what,
                        value: shown_field(raw),
                    })
            };
            let offset = field(&entry.offset, "an offset")?;
            let len = field(&entry.numbytes, "a length")?;
            self.builder.push(offset, len)?;
        }
        Ok(())
    }
}

/// A number field of a header as GNU tar reads it: octal digits after optional spaces, ended by
/// a NUL or a space (a field of NULs is 0); or base-256, marked by the first byte's top bit,
/// whose next bit is the sign of a two's complement number filling the rest of the field.
/// Fields are at most 12 bytes, so the value always fits.
fn header_number(field: &[u8]) -> Option<i128> {
    let (&first, rest) = field.split_first()?;
    if first & 0x80 != 0 {
        let negative = first & 0x40 != 0;
        let mut value: i128 = if negative { -1 } else { 0 };
        value = (value << 6) | i128::from(first & 0x3f);
        for &byte in rest {
            value = value.checked_mul(256)? | i128::from(byte);
        }
        return Some(value);
    }
    let start = field.iter().position(|&b| b != b' ')?;
    let digits = field[start..]
        .iter()
        .take_while(|b| (b'0'..=b'7').contains(*b))
        .count();
    let (number, after) = field[start..].split_at(digits);
    if !after.iter().all(|&b| b == 0 || b == b' ') {
        return None;
    }
    number.iter().try_fold(0i128, |value, &digit| {
        value.checked_mul(8)?.checked_add(i128::from(digit - b'0'))
    })
}

/// What every refusal of a number ends with.
const CORRUPT: &str = "; the tarball is corrupt: download or create it again";

/// A header field in `min..=max`; why not, reading after the member's name.
fn header_field(field: &[u8], what: &str, min: i128, max: i128) -> Result<i128, String> {
    match header_number(field) {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        Some(n) => Err(format!(
            "has the {what} {n} in its header, outside the range it may have \
             ({min} to {max}){CORRUPT}"
        )),
        None => Err(format!(
            "has the {what} '{}' in its header, which is not a number{CORRUPT}",
            shown_field(field)
        )),
    }
}

/// A field's bytes for a message: up to its first NUL, escaped.
fn shown_field(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    escape(&field[..end])
}

/// Why a pax record cannot be used, reading after the member's name.
fn bad_record(key: &str, value: &[u8], problem: &str) -> String {
    format!("has the pax {key} '{}', {problem}{CORRUPT}", escape(value))
}

/// A decimal pax number up to `max`; why not, reading after the value.
fn pax_number(value: &[u8], max: u64) -> Result<u64, String> {
    let text = std::str::from_utf8(value)
        .ok()
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .ok_or("which is not a number")?;
    text.parse::<u64>()
        .ok()
        .filter(|&n| n <= max)
        .ok_or_else(|| format!("beyond the largest it may be ({max})"))
}

/// An owner or group: the pax record's if there is one, else the header's. `u32::MAX` is no id:
/// `chown` reads it as "leave unchanged".
fn id(record: Option<Vec<u8>>, field: &[u8], key: &str) -> Result<u32, String> {
    let max = u32::MAX - 1;
    match record {
        Some(value) => pax_number(&value, max.into())
            .map(|n| n as u32)
            .map_err(|problem| bad_record(key, &value, &problem)),
        None => header_field(field, key, 0, max.into()).map(|n| n as u32),
    }
}

/// A pax time: seconds, optionally negative, optionally with a fraction
/// (`1700000000.123456789`; digits past nanoseconds are dropped).
fn pax_time(value: &[u8]) -> Result<Timespec, &'static str> {
    let text = std::str::from_utf8(value).map_err(|_| "which is not a time")?;
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (secs, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if secs.is_empty() || !digits(secs) || !digits(frac) {
        return Err("which is not a time");
    }
    let out_of_range = "which is out of the range of times";
    let nanos: i128 = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(9)
        .fold(0, |n, digit| n * 10 + i128::from(digit - b'0'));
    let total = secs
        .parse::<i128>()
        .ok()
        .and_then(|secs| secs.checked_mul(1_000_000_000)?.checked_add(nanos))
        .ok_or(out_of_range)?;
    // A negative time with a fraction counts the fraction backwards from the whole second
    // before it: -1.25 is 0.75 after -2.
    let total = if negative { -total } else { total };
    let tv_sec = i64::try_from(total.div_euclid(1_000_000_000)).map_err(|_| out_of_range)?;
    Ok(Timespec {
        tv_sec,
        tv_nsec: total.rem_euclid(1_000_000_000) as _,
    })
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
    let field = 148..156;
    let stored = header_number(&block[field.clone()])
        .ok_or_else(|| corrupt("a header has no valid checksum: this is not a tar archive"))?;
    let (unsigned, signed) = block
        .iter()
        .enumerate()
        .fold((0i128, 0i128), |(u, s), (i, &b)| {
            let b = if field.contains(&i) { b' ' } else { b };
            (u + i128::from(b), s + i128::from(b as i8))
        });
    if stored == unsigned || stored == signed {
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

    /// Every member, whole, or the error that stopped the reading.
    fn members(archive: &[u8]) -> Result<Vec<Member>, ReadError> {
        let mut reader = TarReader::new(archive);
        let mut members = Vec::new();
        while let Some(member) = reader.next_member()? {
            members.push(member);
        }
        Ok(members)
    }

    /// A pax header (`x`, or `g` for a global one) holding `records`, as raw blocks.
    fn pax_header(kind: EntryType, records: &[(&str, &[u8])]) -> Vec<u8> {
        let mut data = Vec::new();
        for (key, value) in records {
            let body_len = key.len() + value.len() + 3;
            // The length counts its own digits.
            let mut len = body_len + 1;
            while len.to_string().len() + body_len != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        let mut out = gnu_header(kind, "pax", data.len() as u64)
            .as_bytes()
            .to_vec();
        out.extend(padded(&data));
        out
    }

    /// A member with `data`, its header set up by `edit` (the checksum is set after).
    fn member_with(
        kind: EntryType,
        name: &str,
        data: &[u8],
        edit: impl Fn(&mut Header),
    ) -> Vec<u8> {
        let mut header = gnu_header(kind, name, data.len() as u64);
        edit(&mut header);
        header.set_cksum();
        let mut out = header.as_bytes().to_vec();
        out.extend(padded(data));
        out
    }

    /// A reader that counts what was taken from it.
    struct Counted<'a> {
        data: &'a [u8],
        taken: usize,
    }

    impl Read for Counted<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = (&self.data[self.taken..]).read(buf)?;
            self.taken += n;
            Ok(n)
        }
    }

    #[test]
    fn old_gnu_map_is_refused_at_the_run_past_the_data_not_at_the_end_of_its_chain() {
        // 10 bytes stored, and a chain of 1000 extension blocks of one-byte runs after them.
        let runs: Vec<(u64, &[u8])> = (0..21_004u64).map(|i| (2 * i, &b"x"[..])).collect();
        let mut archive = old_gnu_sparse("var/bomb", 1 << 40, &runs);
        let mut header = Header::from_byte_slice(&archive[..BLOCK]).clone();
        header.set_size(10);
        header.set_cksum();
        archive[..BLOCK].copy_from_slice(header.as_bytes());
        let mut counted = Counted {
            data: &archive,
            taken: 0,
        };
        let err = TarReader::new(&mut counted)
            .next_member()
            .err()
            .expect("refused");
        let ReadError::Member { entry, reason } = &err else {
            panic!("{err}");
        };
        assert_eq!(entry, "var/bomb");
        assert!(reason.contains("more data (11 bytes so far)"), "{reason}");
        assert!(
            counted.taken <= 2 * BLOCK,
            "read {} bytes of the map before refusing it",
            counted.taken
        );
    }

    #[test]
    fn pax_1_0_map_that_announces_too_many_runs_is_refused_at_its_first_block() {
        let mut data = padded(format!("{}\n0\n1\n", sparse::MAX_RUNS + 1).as_bytes());
        data.extend_from_slice(&[b'x'; BLOCK]);
        let mut archive = pax_header(
            EntryType::XHeader,
            &[
                ("GNU.sparse.major", b"1"),
                ("GNU.sparse.minor", b"0"),
                ("GNU.sparse.name", b"var/bomb"),
                ("GNU.sparse.realsize", b"1099511627776"),
            ],
        );
        archive.extend(member_with(
            EntryType::Regular,
            "GNUSparseFile.1/bomb",
            &data,
            |_| {},
        ));
        let err = members(&end_of_archive(archive)).err().expect("refused");
        assert!(err.to_string().contains("more than 1048576 runs"), "{err}");
    }

    #[test]
    fn pax_size_at_the_top_of_u64_is_refused_not_wrapped() {
        // Skipped, not read: a directory's data. Its size plus padding would wrap to 0.
        for size in [&b"18446744073709551615"[..], b"9223372036854775808"] {
            let mut archive = pax_header(EntryType::XHeader, &[("size", size)]);
            archive.extend(member_with(EntryType::Directory, "etc/", b"", |_| {}));
            archive.extend(member_with(EntryType::Regular, "etc/after", b"x", |_| {}));
            let err = members(&end_of_archive(archive)).err().expect("refused");
            let message = err.to_string();
            assert!(
                message.contains("entry 'etc/' has the pax size")
                    && message.contains("beyond the largest it may be (9223372036854775807)"),
                "{message}"
            );
        }
    }

    #[test]
    fn header_numbers_beyond_their_range_are_refused_not_truncated() {
        // Base-256 sizes of 2^64 + 5 (which the low 64 bits read as 5) and of -1.
        let mut wide = [0u8; 12];
        wide[0] = 0x80;
        wide[3] = 1;
        wide[11] = 5;
        for field in [wide, [0xff; 12]] {
            let archive = member_with(EntryType::Regular, "etc/size", b"12345", |h| {
                h.as_old_mut().size = field;
            });
            let err = members(&end_of_archive(archive)).err().expect("refused");
            assert!(err.to_string().contains("has the size"), "{err}");
        }
        // An owner of 2^32 is not owner 0; 2^32-1 tells chown to leave the owner alone.
        for uid in [1u64 << 32, u32::MAX.into()] {
            let archive = member_with(EntryType::Regular, "etc/shadow", b"", |h| h.set_uid(uid));
            let err = members(&end_of_archive(archive)).err().expect("refused");
            assert!(
                err.to_string()
                    .contains(&format!("entry 'etc/shadow' has the uid {uid}")),
                "{err}"
            );
        }
        let archive = member_with(EntryType::Regular, "etc/gid", b"", |h| {
            h.as_old_mut().gid = *b"12x45\0\0\0";
        });
        let err = members(&end_of_archive(archive)).err().expect("refused");
        assert!(err.to_string().contains("'12x45'"), "{err}");
    }

    #[test]
    fn header_numbers_are_read_as_gnu_tar_reads_them() {
        assert_eq!(header_number(b"0000644\0"), Some(0o644));
        assert_eq!(header_number(b"  644 \0\0"), Some(0o644));
        assert_eq!(header_number(&[0; 8]), Some(0), "a field of NULs is 0");
        assert_eq!(header_number(b"        "), None, "blanks are not a number");
        assert_eq!(header_number(b"0644x\0\0\0"), None);
        assert_eq!(header_number(b"08\0"), None, "octal");
        let mut positive = [0u8; 12];
        positive[0] = 0x80;
        positive[4..].copy_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(header_number(&positive), Some(1 << 40));
        // -2 in two's complement; GNU tar writes times before 1970 so.
        let mut negative = [0xffu8; 12];
        negative[11] = 0xfe;
        assert_eq!(header_number(&negative), Some(-2));
        let mut huge = [0u8; 12];
        huge[0] = 0xbf;
        assert_eq!(header_number(&huge), Some(0x3f << 88));
    }

    #[test]
    fn pax_times_keep_nanoseconds_and_stay_in_range() {
        let time = |text: &[u8]| pax_time(text).map(|t| (t.tv_sec, t.tv_nsec));
        assert_eq!(time(b"1700000000.5"), Ok((1_700_000_000, 500_000_000)));
        assert_eq!(
            time(b"1700000000.123456789123"),
            Ok((1_700_000_000, 123_456_789))
        );
        assert_eq!(time(b"1700000000"), Ok((1_700_000_000, 0)));
        assert_eq!(time(b"-1.25"), Ok((-2, 750_000_000)));
        assert_eq!(time(b"-0.5"), Ok((-1, 500_000_000)));
        assert_eq!(time(b"-9223372036854775808"), Ok((i64::MIN, 0)));
        assert_eq!(
            time(b"9223372036854775807.999999999"),
            Ok((i64::MAX, 999_999_999))
        );
        for bad in [&b"soon"[..], b"", b"-", b"1.-5", b"+5", b"1e9", b"1.5.5"] {
            assert_eq!(time(bad), Err("which is not a time"), "{bad:?}");
        }
        for out in [
            &b"-9223372036854775808.5"[..],
            b"9223372036854775808",
            b"99999999999999999999999999999999999999999999",
        ] {
            assert_eq!(
                time(out),
                Err("which is out of the range of times"),
                "{out:?}"
            );
        }
    }

    #[test]
    fn pax_records_end_by_their_length_so_values_may_hold_line_breaks() {
        let capability = b"\x01\x00\x00\x02\x0a\x20\x00\x00\n\x00";
        let mut archive = pax_header(
            EntryType::XHeader,
            &[
                ("SCHILY.xattr.security.capability", capability),
                ("mtime", b"1700000000.25"),
            ],
        );
        archive.extend(member_with(EntryType::Regular, "usr/bin/ping", b"", |_| {}));
        let read = members(&end_of_archive(archive)).unwrap();
        assert_eq!(
            read[0].pax,
            [
                (
                    b"SCHILY.xattr.security.capability".to_vec(),
                    capability.to_vec()
                ),
                (b"mtime".to_vec(), b"1700000000.25".to_vec())
            ]
        );
        for bad in [
            &b"5 a=b\n"[..],
            b"6 a=b",
            b"x a=b\n",
            b"6 ab\n\n",
            b"99 a=b\n",
        ] {
            let mut header = gnu_header(EntryType::XHeader, "pax", bad.len() as u64)
                .as_bytes()
                .to_vec();
            header.extend(padded(bad));
            header.extend(member_with(EntryType::Regular, "etc/x", b"", |_| {}));
            let err = members(&end_of_archive(header)).err().expect("refused");
            assert!(err.to_string().contains("malformed pax records"), "{err}");
        }
    }

    #[test]
    fn global_header_records_are_defaults_until_the_next_global_header_replaces_them() {
        let mut archive = pax_header(
            EntryType::XGlobalHeader,
            &[
                ("comment", b"a commit id"),
                ("uid", b"1234"),
                ("mtime", b"5.5"),
            ],
        );
        archive.extend(member_with(EntryType::Regular, "a", b"aa", |h| {
            h.set_uid(5)
        }));
        archive.extend(pax_header(EntryType::XHeader, &[("uid", b"99")]));
        archive.extend(member_with(EntryType::Regular, "b", b"bb", |h| {
            h.set_uid(5)
        }));
        archive.extend(pax_header(EntryType::XGlobalHeader, &[("gid", b"77")]));
        archive.extend(member_with(EntryType::Regular, "c", b"cc", |h| {
            h.set_uid(5);
            h.set_gid(6);
        }));
        archive.extend(pax_header(EntryType::XGlobalHeader, &[]));
        archive.extend(member_with(EntryType::Regular, "d", b"dd", |h| {
            h.set_gid(6)
        }));
        let found: Vec<(String, u32, u32, i64)> = members(&end_of_archive(archive))
            .unwrap()
            .iter()
            .map(|m| {
                let a = &m.attributes;
                (m.shown_name(), a.uid, a.gid, a.mtime.tv_sec)
            })
            .collect();
        assert_eq!(
            found,
            [
                ("a".into(), 1234, 0, 5),
                ("b".into(), 99, 0, 5),
                ("c".into(), 5, 77, 0),
                ("d".into(), 0, 6, 0),
            ]
        );
    }

    #[test]
    fn global_header_size_and_path_apply_to_every_member_after_it() {
        // As GNU tar reads such an archive: every member is named `same` and holds 3 bytes.
        let mut archive = pax_header(
            EntryType::XGlobalHeader,
            &[("path", b"same"), ("size", b"3")],
        );
        archive.extend(member_with(EntryType::Regular, "a", b"abc", |h| {
            h.set_size(2)
        }));
        archive.extend(member_with(EntryType::Regular, "b", b"def", |_| {}));
        let members = read_all(&end_of_archive(archive)).unwrap();
        let found: Vec<(&str, &[u8])> = members
            .iter()
            .map(|(name, _, data)| (name.as_str(), data.as_slice()))
            .collect();
        assert_eq!(found, [("same", &b"abc"[..]), ("same", &b"def"[..])]);
    }

    #[test]
    fn global_header_with_a_sparse_map_or_an_xattr_is_refused() {
        for key in ["GNU.sparse.map", "SCHILY.xattr.user.origin"] {
            let mut archive = pax_header(EntryType::XGlobalHeader, &[(key, b"0,1")]);
            archive.extend(member_with(EntryType::Regular, "a", b"a", |_| {}));
            let err = members(&end_of_archive(archive)).err().expect("refused");
            assert!(
                matches!(&err, ReadError::Stream(e) if e.to_string().contains(key)),
                "{err}"
            );
        }
    }

    #[test]
    fn names_and_values_from_the_archive_are_escaped_in_errors() {
        let mut archive = pax_header(EntryType::XHeader, &[("uid", b"\x1b]0;owned\x07")]);
        archive.extend(member_with(
            EntryType::Regular,
            "etc/\x1b[2Jx\nerror: fake",
            b"",
            |_| {},
        ));
        let err = members(&end_of_archive(archive)).err().expect("refused");
        let message = err.to_string();
        assert!(
            message.starts_with(
                "entry 'etc/\\033[2Jx\\nerror: fake' has the pax uid '\\033]0;owned\\a'"
            ),
            "{message}"
        );
        assert!(!message.chars().any(char::is_control), "{message:?}");
    }

    #[test]
    fn extension_data_is_allocated_as_it_arrives() {
        // A pax header that claims 16 MiB in a stream of two blocks: a truncation, read from
        // what is there, not 16 MiB allocated up front (the property test measures it).
        let mut header = gnu_header(EntryType::XHeader, "pax", MAX_EXTENSION);
        header.set_cksum();
        let mut archive = header.as_bytes().to_vec();
        archive.extend_from_slice(b"11 uid=123\n");
        let err = members(&archive).err().expect("refused");
        assert!(
            matches!(&err, ReadError::Stream(e) if e.kind() == io::ErrorKind::UnexpectedEof),
            "{err}"
        );
    }
}
