//! The `newc` cpio format as the kernel's initramfs unpacker reads it (`init/initramfs.c`) and
//! `usr/gen_init_cpio.c` writes it: a 110-byte ASCII header of hex fields, the NUL-terminated
//! name, padding to 4 bytes, the data, padding to 4 bytes; `TRAILER!!!` at the end.
//!
//! Conventions that matter: hardlinks share an inode number and carry their data on the last
//! link (earlier links have size 0), device numbers of the archive itself are 0, and fields are
//! 32 bits wide — so no file of 4 GiB or more, and times within 1970..2106.

use std::io::{self, Write};

/// The magic of newc headers (no checksum).
const MAGIC: &[u8; 6] = b"070701";

/// The largest size a newc header can state.
pub const MAX_FILE_SIZE: u64 = u32::MAX as u64;

/// One header's fields. Mode includes the file type bits (`S_IFREG`, …).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub ino: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub size: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
}

/// Writes newc entries to `W`, counting the bytes for padding.
pub struct Writer<W> {
    out: W,
    written: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Self { out, written: 0 }
    }

    /// Writes a header and the name; the caller then writes exactly `header.size` bytes of data
    /// with [`Writer::data`] and ends the entry with [`Writer::end_entry`].
    pub fn header(&mut self, header: &Header, name: &[u8]) -> io::Result<()> {
        let namesize = u32::try_from(name.len() + 1)
            .map_err(|_| io::Error::other("name too long for cpio"))?;
        let fields = [
            header.ino,
            header.mode,
            header.uid,
            header.gid,
            header.nlink,
            header.mtime,
            header.size,
            0, // devmajor: the archive's own device
            0, // devminor
            header.rdev_major,
            header.rdev_minor,
            namesize,
            0, // check: newc has none
        ];
        let mut buf = Vec::with_capacity(110 + name.len() + 4);
        buf.extend_from_slice(MAGIC);
        for field in fields {
            write!(buf, "{field:08X}")?;
        }
        buf.extend_from_slice(name);
        buf.push(0);
        self.put(&buf)?;
        self.pad()
    }

    /// Writes data of the current entry.
    pub fn data(&mut self, data: &[u8]) -> io::Result<()> {
        self.put(data)
    }

    /// Pads the entry's data to 4 bytes.
    pub fn end_entry(&mut self) -> io::Result<()> {
        self.pad()
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        let trailer = Header {
            nlink: 1,
            ..Header::default()
        };
        self.header(&trailer, b"TRAILER!!!")?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Bytes of archive written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..pad])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_padded_to_four_bytes_like_gen_init_cpio() {
        let mut w = Writer::new(Vec::new());
        let header = Header {
            ino: 1,
            mode: 0o100644,
            nlink: 1,
            size: 3,
            ..Header::default()
        };
        w.header(&header, b"a").unwrap();
        // 110 + "a\0" = 112: already aligned.
        assert_eq!(w.written(), 112);
        w.data(b"abc").unwrap();
        w.end_entry().unwrap();
        assert_eq!(w.written(), 116);
        let out = w.finish().unwrap();
        assert_eq!(&out[..6], b"070701");
        assert_eq!(&out[6..14], b"00000001");
        assert_eq!(&out[14..22], b"000081A4");
        assert!(out.len() % 4 == 0);
        let trailer = &out[116..];
        assert_eq!(&trailer[110..120], b"TRAILER!!!");
    }
}
