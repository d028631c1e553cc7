//! Names and values from an archive as messages show them. A tarball is untrusted: an escape
//! sequence in an entry name would reach the operator's terminal, and a line break would fake
//! lines of output. So, as GNU tar quotes names in its own messages, every byte that a terminal
//! would act on is written as a C escape (`\n`, `\033`), a backslash as `\\`, and bytes that
//! are not UTF-8 in octal; the rest is shown as it is.

use std::fmt::Write as _;

/// `bytes` with control characters, backslashes and invalid UTF-8 escaped.
pub(super) fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\x0b' => out.push_str("\\v"),
                '\x0c' => out.push_str("\\f"),
                '\r' => out.push_str("\\r"),
                c if acts_on_terminal(c) => {
                    let mut utf8 = [0u8; 4];
                    octal(&mut out, c.encode_utf8(&mut utf8).as_bytes());
                }
                c => out.push(c),
            }
        }
        octal(&mut out, chunk.invalid());
    }
    out
}

/// C0 and C1 controls and DEL, which terminals interpret (C1's CSI opens an escape sequence as
/// ESC does), and the invisible marks that reorder what a terminal shows after them.
fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn octal(out: &mut String, bytes: &[u8]) {
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "\\{byte:03o}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_and_line_breaks_are_escaped() {
        assert_eq!(
            escape(b"etc/\x1b[31mred\x1b[0m\nerror: fake"),
            "etc/\\033[31mred\\033[0m\\nerror: fake"
        );
        assert_eq!(escape(b"a\\b\tc\rd\x7f\0"), "a\\\\b\\tc\\rd\\177\\000");
        // C1 CSI, as UTF-8, and a right-to-left override.
        assert_eq!(escape("x\u{9b}31m".as_bytes()), "x\\302\\23331m");
        assert_eq!(
            escape("gnp.\u{202e}exe".as_bytes()),
            "gnp.\\342\\200\\256exe"
        );
    }

    #[test]
    fn printable_names_are_shown_as_they_are() {
        for name in ["usr/lib/libc.so.6", "ümlaut/日本語", "it's here", "a b"] {
            assert_eq!(escape(name.as_bytes()), name);
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_shown_in_octal() {
        assert_eq!(escape(b"caf\xe9/x\xff"), "caf\\351/x\\377");
        assert_eq!(escape(b"\xe2\x82"), "\\342\\202");
    }
}
