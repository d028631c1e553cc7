//! Where the data of a tar member lies in the file it becomes, and the sparse maps GNU tar writes
//! to say so: old GNU headers (type `S`), and pax records in the formats 0.0
//! (`GNU.sparse.offset`/`GNU.sparse.numbytes` pairs), 0.1 (`GNU.sparse.map`) and 1.0 (the map as
//! decimal lines at the start of the member's data).
//!
//! A map comes from the archive, so it is checked before anything is written: runs in order, not
//! overlapping, inside the file's size, and their data adding up to what the archive stores.
//! Holes are never materialised: a 1 TiB file with 4 KiB of data costs 4 KiB to read and write.
//!
//! A map is also bounded while it is read. An old GNU map's extension blocks and a 1.0 map in the
//! member's data are limited only by the decompressed stream, and a run of increasing decimal
//! offsets compresses to almost nothing: so a map is refused at its [`MAX_RUNS`]th run, and at
//! the run whose data passes what the archive stores, not when it ends.

use super::quoting::escape;

/// `len` bytes of data at `offset` in the file; what lies between runs is a hole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Run {
    pub offset: u64,
    pub len: u64,
}

/// The layout of a member's file: its size and where its data goes, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct DataMap {
    pub size: u64,
    pub runs: Vec<Run>,
}

impl DataMap {
    /// A plain file: its data from the start, no holes.
    pub fn contiguous(size: u64) -> Self {
        let runs = if size == 0 {
            Vec::new()
        } else {
            vec![Run {
                offset: 0,
                len: size,
            }]
        };
        Self { size, runs }
    }
}

/// The most runs a map may list: what 16 MiB of runs hold, the bound an extension header has
/// too. GNU tar lists one run per stretch of data between holes; a real file has far fewer.
pub(super) const MAX_RUNS: u64 = (16 << 20) / std::mem::size_of::<Run>() as u64;

/// The largest file size and offset, as GNU tar reads them (an `off_t`).
const MAX_FILE_SIZE: u64 = i64::MAX as u64;

/// Why a sparse map cannot be trusted. Each reads after "its sparse map …".
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum MapError {
    #[error("has '{value}' where {what} should be a decimal number")]
    NotANumber { what: &'static str, value: String },
    #[error("has no {0}")]
    Missing(&'static str),
    #[error("is in the format {major}.{minor}, which GNU tar does not write (0.0, 0.1 and 1.0)")]
    Version { major: String, minor: String },
    #[error("puts a run at {offset} before the end of the one before it ({previous_end}): runs must be in order and must not overlap")]
    Overlap { offset: u64, previous_end: u64 },
    #[error("puts {len} bytes at {offset}, past the file's size of {size} bytes")]
    PastEnd { offset: u64, len: u64, size: u64 },
    #[error("lists {listed} bytes of data, but the archive stores {stored} bytes for the member")]
    DataSize { listed: u64, stored: u64 },
    #[error("announces {announced} runs but lists {listed}")]
    Count { announced: u64, listed: u64 },
    #[error("ends in the middle of a run")]
    Truncated,
    #[error("lists a run after the empty entry that ends it")]
    AfterEnd,
    #[error("lists more than {limit} runs, more than any file needs")]
    TooManyRuns { limit: u64 },
    #[error("lists more data ({listed} bytes so far) than the archive stores for the member ({stored} bytes)")]
    MoreData { listed: u64, stored: u64 },
    #[error("gives the file size {size}, beyond the largest a file can have (2^63-1 bytes)")]
    TooLarge { size: u64 },
}

/// Collects a map run by run, checking each as it comes, so a hostile map is refused at the run
/// that is wrong and never costs more memory than [`MAX_RUNS`] runs.
#[derive(Debug)]
pub(super) struct MapBuilder {
    size: u64,
    /// The data the archive has for the member: the runs may not list more.
    stored: u64,
    runs: Vec<Run>,
    /// Runs listed so far, the empty ones (which only mark where a file ending in a hole ends)
    /// included: what a declared count is checked against.
    listed: u64,
    end: u64,
    data: u64,
}

impl MapBuilder {
    /// A map of a file of `size` bytes whose data is at most the `stored` bytes the archive has.
    pub fn new(size: u64, stored: u64) -> Result<Self, MapError> {
        if size > MAX_FILE_SIZE {
            return Err(MapError::TooLarge { size });
        }
        Ok(Self {
            size,
            stored,
            runs: Vec::new(),
            listed: 0,
            end: 0,
            data: 0,
        })
    }

    pub fn push(&mut self, offset: u64, len: u64) -> Result<(), MapError> {
        if self.listed == MAX_RUNS {
            return Err(MapError::TooManyRuns { limit: MAX_RUNS });
        }
        if offset < self.end {
            return Err(MapError::Overlap {
                offset,
                previous_end: self.end,
            });
        }
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= self.size)
            .ok_or(MapError::PastEnd {
                offset,
                len,
                size: self.size,
            })?;
        // Runs lie in order inside `size`, so their total cannot overflow.
        let data = self.data + len;
        if data > self.stored {
            return Err(MapError::MoreData {
                listed: data,
                stored: self.stored,
            });
        }
        self.listed += 1;
        self.data = data;
        self.end = end;
        if len > 0 {
            self.runs.push(Run { offset, len });
        }
        Ok(())
    }

    /// The map, if its runs hold exactly the `stored` bytes the archive has for the member's
    /// file (a 1.0 map's own blocks are not the file's).
    pub fn finish(self, stored: u64) -> Result<DataMap, MapError> {
        if self.data != stored {
            return Err(MapError::DataSize {
                listed: self.data,
                stored,
            });
        }
        Ok(DataMap {
            size: self.size,
            runs: self.runs,
        })
    }
}

/// A sparse member described by pax records.
#[derive(Debug)]
pub(super) enum PaxSparse {
    /// 0.0 and 0.1: the whole map is in the records.
    Listed(MapBuilder),
    /// 1.0: the map opens the member's data; only the file's size is in the records.
    InData { size: u64 },
}

/// The sparse layout that a member's pax records describe, if they describe one, for a member
/// with `stored` bytes of data in the archive.
pub(super) fn pax_sparse(
    records: &[(Vec<u8>, Vec<u8>)],
    stored: u64,
) -> Result<Option<PaxSparse>, MapError> {
    // A later record overrides an earlier one with the same key, as pax says; only the run
    // records of 0.0 repeat on purpose.
    let last = |key: &[u8]| {
        records
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    };
    if let Some(major) = last(b"GNU.sparse.major") {
        let minor = last(b"GNU.sparse.minor").unwrap_or_default();
        if major != b"1" || minor != b"0" {
            return Err(MapError::Version {
                major: escape(major),
                minor: escape(minor),
            });
        }
        let size = last(b"GNU.sparse.realsize")
            .ok_or(MapError::Missing("file size (GNU.sparse.realsize)"))?;
        let size = number("the file size", size)?;
        if size > MAX_FILE_SIZE {
            return Err(MapError::TooLarge { size });
        }
        return Ok(Some(PaxSparse::InData { size }));
    }
    let map = last(b"GNU.sparse.map");
    let has_pairs = records.iter().any(|(k, _)| k == b"GNU.sparse.offset");
    let size = match last(b"GNU.sparse.size") {
        Some(size) => number("the file size", size)?,
        None if map.is_some() || has_pairs => {
            return Err(MapError::Missing("file size (GNU.sparse.size)"))
        }
        None => return Ok(None),
    };
    let mut builder = MapBuilder::new(size, stored)?;
    if let Some(map) = map {
        // An empty map is a file that is all hole.
        let fields = if map.is_empty() { None } else { Some(map) };
        let mut numbers = fields
            .into_iter()
            .flat_map(|map| map.split(|&b| b == b','))
            .map(|n| number("an offset or a length", n));
        while let Some(offset) = numbers.next() {
            let len = numbers.next().ok_or(MapError::Truncated)?;
            builder.push(offset?, len?)?;
        }
    } else {
        let mut offset = None;
        for (key, value) in records {
            match key.as_slice() {
                b"GNU.sparse.offset" if offset.is_none() => {
                    offset = Some(number("an offset", value)?);
                }
                b"GNU.sparse.offset" => return Err(MapError::Truncated),
                b"GNU.sparse.numbytes" => {
                    let start = offset.take().ok_or(MapError::Truncated)?;
                    builder.push(start, number("a length", value)?)?;
                }
                _ => {}
            }
        }
        if offset.is_some() {
            return Err(MapError::Truncated);
        }
    }
    if let Some(count) = last(b"GNU.sparse.numblocks") {
        let announced = number("the number of runs", count)?;
        if announced != builder.listed {
            return Err(MapError::Count {
                announced,
                listed: builder.listed,
            });
        }
    }
    Ok(Some(PaxSparse::Listed(builder)))
}

/// Reads the map of a 1.0 member from the blocks that open its data: the number of runs, then
/// each run's offset and length, one decimal number a line, padded to a whole block.
#[derive(Debug)]
pub(super) struct MapInData {
    builder: MapBuilder,
    announced: Option<u64>,
    offset: Option<u64>,
    digits: Option<u64>,
}

impl MapInData {
    /// The map of a file of `size` bytes, read from a member whose data (map included) is
    /// `stored` bytes.
    pub fn new(size: u64, stored: u64) -> Result<Self, MapError> {
        Ok(Self {
            builder: MapBuilder::new(size, stored)?,
            announced: None,
            offset: None,
            digits: None,
        })
    }

    /// Takes the next block of the member's data; true once the map is complete, and the file's
    /// data starts with the next block.
    pub fn feed(&mut self, block: &[u8]) -> Result<bool, MapError> {
        if self.is_complete() {
            return Ok(true);
        }
        for &byte in block {
            match byte {
                b'0'..=b'9' => {
                    let digit = u64::from(byte - b'0');
                    let value = self
                        .digits
                        .unwrap_or(0)
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(digit))
                        .ok_or_else(|| MapError::NotANumber {
                            what: "an offset or a length",
                            value: "a number beyond 2^64".into(),
                        })?;
                    self.digits = Some(value);
                }
                b'\n' => {
                    let value = self.digits.take().ok_or(MapError::NotANumber {
                        what: "an offset or a length",
                        value: String::new(),
                    })?;
                    self.take(value)?;
                    if self.is_complete() {
                        return Ok(true);
                    }
                }
                other => {
                    return Err(MapError::NotANumber {
                        what: "an offset or a length",
                        value: escape(&[other]),
                    })
                }
            }
        }
        Ok(false)
    }

    fn take(&mut self, value: u64) -> Result<(), MapError> {
        match (self.announced, self.offset.take()) {
            // Refused at once: the runs it announces would be refused one by one.
            (None, _) if value > MAX_RUNS => return Err(MapError::TooManyRuns { limit: MAX_RUNS }),
            (None, _) => self.announced = Some(value),
            (Some(_), None) => self.offset = Some(value),
            (Some(_), Some(offset)) => self.builder.push(offset, value)?,
        }
        Ok(())
    }

    fn is_complete(&self) -> bool {
        self.announced == Some(self.builder.listed) && self.offset.is_none()
    }

    /// The map, once complete, checked against the `stored` bytes of data that follow it.
    pub fn finish(self, stored: u64) -> Result<DataMap, MapError> {
        if !self.is_complete() {
            return Err(MapError::Truncated);
        }
        self.builder.finish(stored)
    }
}

fn number(what: &'static str, text: &[u8]) -> Result<u64, MapError> {
    std::str::from_utf8(text)
        .ok()
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| MapError::NotANumber {
            what,
            value: escape(text),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    fn run(offset: u64, len: u64) -> Run {
        Run { offset, len }
    }

    fn listed(pairs: &[(&str, &str)], stored: u64) -> Result<DataMap, MapError> {
        match pax_sparse(&records(pairs), stored)? {
            Some(PaxSparse::Listed(builder)) => builder.finish(stored),
            other => panic!("not a listed map: {other:?}"),
        }
    }

    #[test]
    fn pax_0_0_pairs_and_0_1_map_give_the_same_layout() {
        let expected = DataMap {
            size: 1 << 30,
            runs: vec![run(0, 4096), run(1 << 29, 8192)],
        };
        let pairs = listed(
            &[
                ("GNU.sparse.size", "1073741824"),
                ("GNU.sparse.numblocks", "3"),
                ("GNU.sparse.offset", "0"),
                ("GNU.sparse.numbytes", "4096"),
                ("GNU.sparse.offset", "536870912"),
                ("GNU.sparse.numbytes", "8192"),
                ("GNU.sparse.offset", "1073741824"),
                ("GNU.sparse.numbytes", "0"),
            ],
            12288,
        );
        assert_eq!(pairs, Ok(expected.clone()));
        let map = listed(
            &[
                ("GNU.sparse.size", "1073741824"),
                ("GNU.sparse.numblocks", "3"),
                ("GNU.sparse.map", "0,4096,536870912,8192,1073741824,0"),
            ],
            12288,
        );
        assert_eq!(map, Ok(expected));
    }

    #[test]
    fn a_file_that_is_all_hole_has_no_runs() {
        let empty = listed(&[("GNU.sparse.size", "4096"), ("GNU.sparse.map", "")], 0);
        assert_eq!(
            empty,
            Ok(DataMap {
                size: 4096,
                runs: Vec::new()
            })
        );
        let marker = listed(
            &[("GNU.sparse.size", "4096"), ("GNU.sparse.map", "4096,0")],
            0,
        );
        assert_eq!(empty, marker);
    }

    #[test]
    fn a_member_without_sparse_records_is_plain() {
        let plain = records(&[("path", "etc/hostname"), ("mtime", "1700000000.5")]);
        assert!(matches!(pax_sparse(&plain, 0), Ok(None)));
    }

    #[test]
    fn pax_1_0_map_is_read_from_the_data_blocks() {
        let declared = records(&[
            ("GNU.sparse.major", "1"),
            ("GNU.sparse.minor", "0"),
            ("GNU.sparse.name", "var/db/big"),
            ("GNU.sparse.realsize", "10000"),
        ]);
        let Ok(Some(PaxSparse::InData { size })) = pax_sparse(&declared, 1024 + 101) else {
            panic!("a 1.0 member");
        };
        assert_eq!(size, 10000);
        let mut parser = MapInData::new(size, 1024 + 101).unwrap();
        // A number may be cut by a block boundary.
        let mut first = b"2\n512\n10".to_vec();
        first.resize(8, 0);
        assert_eq!(parser.feed(&first), Ok(false));
        let mut second = b"0\n9999\n1\n".to_vec();
        second.resize(512, 0);
        assert_eq!(parser.feed(&second), Ok(true));
        assert_eq!(
            parser.finish(101),
            Ok(DataMap {
                size: 10000,
                runs: vec![run(512, 100), run(9999, 1)],
            })
        );
    }

    #[test]
    fn unknown_versions_are_refused() {
        let err = pax_sparse(
            &records(&[("GNU.sparse.major", "2"), ("GNU.sparse.minor", "0")]),
            0,
        )
        .unwrap_err();
        assert!(matches!(err, MapError::Version { .. }), "{err}");
    }

    #[test]
    fn a_map_is_refused_at_the_run_past_the_limit_not_at_its_end() {
        let mut builder = MapBuilder::new(MAX_FILE_SIZE, u64::MAX).unwrap();
        for i in 0..MAX_RUNS {
            builder.push(2 * i, 1).unwrap();
        }
        assert_eq!(
            builder.push(2 * MAX_RUNS, 1),
            Err(MapError::TooManyRuns { limit: MAX_RUNS })
        );
        // Empty runs cost no memory, but they are listed all the same.
        let mut builder = MapBuilder::new(10, 0).unwrap();
        for _ in 0..MAX_RUNS {
            builder.push(5, 0).unwrap();
        }
        assert!(builder.push(5, 0).is_err());
        // A 1.0 map that announces more runs than the limit is refused at its first line.
        let mut parser = MapInData::new(100, u64::MAX).unwrap();
        assert_eq!(
            parser.feed(format!("{}\n", MAX_RUNS + 1).as_bytes()),
            Err(MapError::TooManyRuns { limit: MAX_RUNS })
        );
    }

    #[test]
    fn a_map_is_refused_at_the_run_whose_data_passes_what_is_stored() {
        let mut builder = MapBuilder::new(1 << 40, 3000).unwrap();
        builder.push(0, 1000).unwrap();
        builder.push(5000, 2000).unwrap();
        assert_eq!(
            builder.push(9000, 1),
            Err(MapError::MoreData {
                listed: 3001,
                stored: 3000
            })
        );
        let mut parser = MapInData::new(1 << 40, 1024).unwrap();
        assert_eq!(
            parser.feed(b"1000000\n0\n600\n1000\n600\n"),
            Err(MapError::MoreData {
                listed: 1200,
                stored: 1024
            })
        );
    }

    #[test]
    fn file_sizes_beyond_an_off_t_are_refused() {
        assert_eq!(
            MapBuilder::new(1 << 63, 0).unwrap_err(),
            MapError::TooLarge { size: 1 << 63 }
        );
        let huge = records(&[
            ("GNU.sparse.major", "1"),
            ("GNU.sparse.minor", "0"),
            ("GNU.sparse.realsize", "18446744073709551615"),
        ]);
        assert!(matches!(
            pax_sparse(&huge, 0),
            Err(MapError::TooLarge { .. })
        ));
    }

    #[test]
    fn values_from_the_archive_are_escaped_in_errors() {
        let err = listed(
            &[("GNU.sparse.size", "10"), ("GNU.sparse.map", "0,\x1b[2J")],
            0,
        )
        .unwrap_err();
        assert_eq!(
            err,
            MapError::NotANumber {
                what: "an offset or a length",
                value: "\\033[2J".into()
            }
        );
    }

    #[test]
    fn corrupt_maps_are_refused_at_the_wrong_run() {
        let size = ("GNU.sparse.size", "8192");
        let overlap = listed(&[size, ("GNU.sparse.map", "0,4096,2048,10")], 4106);
        assert_eq!(
            overlap,
            Err(MapError::Overlap {
                offset: 2048,
                previous_end: 4096
            })
        );
        let backwards = listed(&[size, ("GNU.sparse.map", "4096,10,0,10")], 20);
        assert!(matches!(backwards, Err(MapError::Overlap { .. })));
        let past = listed(&[size, ("GNU.sparse.map", "8000,500")], 500);
        assert_eq!(
            past,
            Err(MapError::PastEnd {
                offset: 8000,
                len: 500,
                size: 8192
            })
        );
        let wrapping = listed(&[size, ("GNU.sparse.map", "18446744073709551615,2")], 2);
        assert!(matches!(wrapping, Err(MapError::PastEnd { .. })));
        let short = listed(&[size, ("GNU.sparse.map", "0,4096")], 4000);
        assert_eq!(
            short,
            Err(MapError::MoreData {
                listed: 4096,
                stored: 4000
            })
        );
        let long = listed(&[size, ("GNU.sparse.map", "0,4096")], 5000);
        assert_eq!(
            long,
            Err(MapError::DataSize {
                listed: 4096,
                stored: 5000
            })
        );
        let odd = listed(&[size, ("GNU.sparse.map", "0,4096,5000")], 4096);
        assert_eq!(odd, Err(MapError::Truncated));
        let text = listed(&[size, ("GNU.sparse.map", "0,4k")], 4096);
        assert!(matches!(text, Err(MapError::NotANumber { .. })));
        let count = listed(
            &[
                size,
                ("GNU.sparse.numblocks", "5"),
                ("GNU.sparse.map", "0,10"),
            ],
            10,
        );
        assert_eq!(
            count,
            Err(MapError::Count {
                announced: 5,
                listed: 1
            })
        );
        let lone_length = listed(&[size, ("GNU.sparse.numbytes", "10")], 10);
        assert!(lone_length.is_err());
        let no_size = pax_sparse(&records(&[("GNU.sparse.map", "0,10")]), 10);
        assert!(matches!(no_size, Err(MapError::Missing(_))));

        let mut parser = MapInData::new(100, 512).unwrap();
        assert!(matches!(
            parser.feed(b"1\n0\nten\n"),
            Err(MapError::NotANumber { .. })
        ));
        let mut parser = MapInData::new(100, 512).unwrap();
        assert_eq!(parser.feed(b"2\n0\n10\n"), Ok(false));
        assert_eq!(parser.finish(10), Err(MapError::Truncated));
    }
}
