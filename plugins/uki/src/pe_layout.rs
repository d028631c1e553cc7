//! Where the sections a UKI adds to the stub go. `objcopy --add-section` appends a section's
//! contents to the file but leaves its address to the caller; each must sit after the stub's own
//! sections and after one another, or the firmware would map them over each other.

/// Added sections start on this boundary: a multiple of any section alignment a stub uses
/// (systemd's stubs use 512 bytes or 4 KiB), and the page size the firmware maps in.
pub const SECTION_ALIGN: u64 = 0x1000;

/// One section as `objdump -h` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub size: u64,
    /// Its virtual memory address, the image base included, as `objdump -h` and
    /// `objcopy --change-section-vma` both count it.
    pub vma: u64,
}

impl Section {
    pub fn end(&self) -> u64 {
        self.vma + self.size
    }
}

/// The sections in `objdump -h` output: the lines `IDX NAME SIZE VMA LMA OFFSET ALIGN`, sizes
/// and addresses in hex; the flag lines below each and the headers are skipped.
pub fn parse_objdump(text: &str) -> Vec<Section> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [index, name, size, vma, _lma, _offset, _align] = fields.as_slice() else {
                return None;
            };
            index.parse::<u32>().ok()?;
            Some(Section {
                name: (*name).to_owned(),
                size: u64::from_str_radix(size, 16).ok()?,
                vma: u64::from_str_radix(vma, 16).ok()?,
            })
        })
        .collect()
}

/// The first address after every section, or `None` for a file with no sections.
pub fn end_of(sections: &[Section]) -> Option<u64> {
    sections.iter().map(Section::end).max()
}

/// Places sections of the given sizes one after another from `start`, each on the next
/// [`SECTION_ALIGN`] boundary after the previous one's end; returns their addresses.
pub fn place(start: u64, sizes: &[u64]) -> Vec<u64> {
    let mut next = start;
    sizes
        .iter()
        .map(|size| {
            let vma = next.next_multiple_of(SECTION_ALIGN);
            next = vma + size;
            vma
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `objdump -h` of systemd 252's x86-64 stub, as Debian 12 ships it.
    const STUB_252: &str = "
/usr/lib/systemd/boot/efi/linuxx64.efi.stub:     file format pei-x86-64

Sections:
Idx Name          Size      VMA               LMA               File off  Algn
  0 .text         0000bff0  0000000000004000  0000000000004000  00000400  2**4
                  CONTENTS, ALLOC, LOAD, READONLY, CODE
  1 .reloc        0000000c  0000000000010000  0000000000010000  0000c400  2**2
                  CONTENTS, ALLOC, LOAD, READONLY, DATA
  2 .data         000034b8  0000000000011000  0000000000011000  0000c600  2**4
                  CONTENTS, ALLOC, LOAD, DATA
  3 .dynamic      00000100  0000000000015000  0000000000015000  0000fc00  2**2
                  CONTENTS, ALLOC, LOAD, DATA
  4 .rela         00000f30  0000000000016000  0000000000016000  0000fe00  2**2
                  CONTENTS, ALLOC, LOAD, READONLY, DATA
  5 .dynsym       00000018  0000000000017000  0000000000017000  00010e00  2**2
                  CONTENTS, ALLOC, LOAD, READONLY, DATA
  6 .sbat         000000e2  0000000000019000  0000000000019000  00011000  2**2
                  CONTENTS, ALLOC, LOAD, READONLY, DATA
  7 .sdmagic      00000034  0000000000019100  0000000000019100  00011200  2**2
                  CONTENTS, ALLOC, LOAD, READONLY, DATA
";

    #[test]
    fn reads_every_section_and_skips_the_rest() {
        let sections = parse_objdump(STUB_252);
        assert_eq!(sections.len(), 8);
        assert_eq!(
            sections[0],
            Section {
                name: ".text".into(),
                size: 0xbff0,
                vma: 0x4000
            }
        );
        assert_eq!(sections[7].name, ".sdmagic");
        assert_eq!(end_of(&sections), Some(0x19134));
        assert_eq!(end_of(&parse_objdump("not objdump output\n")), None);
    }

    #[test]
    fn the_highest_end_wins_whatever_the_order() {
        let text = "\
Idx Name          Size      VMA               LMA               File off  Algn
  0 .late         00000010  0000000140020000  0000000140020000  00000400  2**4
  1 .early        00001000  0000000140001000  0000000140001000  00000600  2**4
";
        assert_eq!(end_of(&parse_objdump(text)), Some(0x1_4002_0010));
    }

    #[test]
    fn sections_follow_each_other_on_page_boundaries() {
        // .osrel, .cmdline, .linux, .initrd after the 252 stub.
        let vmas = place(0x19134, &[0x40, 0x1000, 0x8_0001, 0x20]);
        assert_eq!(vmas, [0x1a000, 0x1b000, 0x1c000, 0x9d000]);
        assert_eq!(place(0x2000, &[0x10]), [0x2000], "an aligned start stays");
    }
}
