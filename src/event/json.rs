//! JSON written straight into a byte buffer, byte for byte as `serde_json` writes it,
//! for the two encodings every event goes through: its line (files, Redis, spool) and
//! its canonical form (the hash chain). Strings are most of those bytes, and this
//! escaper checks a whole string with vector instructions where `serde_json` looks
//! at one byte at a time.

use std::io::Write as _;

use serde_json::{Map, Value};

/// Whether JSON must escape `byte`: below 0x20, a quote or a backslash.
#[inline]
fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// Writes the escape of a byte that needs one, as `serde_json` writes it.
#[inline]
fn escape(byte: u8, out: &mut Vec<u8>) {
    let short = match byte {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x09 => b't',
        0x0A => b'n',
        0x0C => b'f',
        0x0D => b'r',
        0x00..=0x1F => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xF)]]);
            return;
        }
        _ => return,
    };
    out.extend_from_slice(&[b'\\', short]);
}

/// Appends `text` as a JSON string, quotes included.
pub fn write_str(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Most strings have nothing to escape: a check of every byte without early exit
    // compiles to vector instructions, and the string is then copied whole.
    if !bytes.iter().fold(false, |dirty, &byte| dirty | needs_escape(byte)) {
        out.extend_from_slice(bytes);
    } else {
        // bytes[start..i] are plain and not yet written.
        let mut start = 0;
        for (i, &byte) in bytes.iter().enumerate() {
            if needs_escape(byte) {
                out.extend_from_slice(&bytes[start..i]);
                escape(byte, out);
                start = i + 1;
            }
        }
        out.extend_from_slice(&bytes[start..]);
    }
    out.push(b'"');
}

/// Appends `value` as `serde_json` writes it compactly (object keys in the map's own
/// order).
pub fn write_value(value: &Value, out: &mut Vec<u8>) {
    write_value_with(value, out, write_map);
}

/// Appends `value` compactly, each object (at any depth) written by `object`: the
/// one place that decides member order.
pub fn write_value_with(value: &Value, out: &mut Vec<u8>, object: fn(&Map<String, Value>, &mut Vec<u8>)) {
    match value {
        Value::String(text) => write_str(text, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value_with(item, out, object);
            }
            out.push(b']');
        }
        Value::Object(map) => object(map, out),
        scalar => write_scalar(scalar, out),
    }
}

/// Appends an object as `serde_json` writes it, members in the map's own order.
pub fn write_map(map: &Map<String, Value>, out: &mut Vec<u8>) {
    let mut object = Object::open(out);
    for (key, item) in map {
        object.key(key);
        write_value(item, object.out);
    }
    object.close();
}

/// Appends a number, boolean or null.
fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Writing a scalar into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// One JSON object being written, its members in the order they are given.
pub struct Object<'o> {
    pub out: &'o mut Vec<u8>,
    first: bool,
}

impl<'o> Object<'o> {
    pub fn open(out: &'o mut Vec<u8>) -> Object<'o> {
        out.push(b'{');
        Object { out, first: true }
    }

    /// Starts a member: its key and the colon; the caller writes the value.
    pub fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_str(key, self.out);
        self.out.push(b':');
    }

    /// Starts a member whose key is a field name of tierlog's own (plain ASCII,
    /// nothing to escape): written as it is.
    pub fn field(&mut self, key: &'static str) {
        debug_assert!(!key.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\'));
        let comma = usize::from(!self.first);
        self.first = false;
        self.out.reserve(key.len() + 4);
        self.out.extend_from_slice(&b",\""[1 - comma..]);
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A string member named by a field name of tierlog's own, if there is a value.
    pub fn str(&mut self, key: &'static str, value: Option<&str>) {
        if let Some(value) = value {
            self.field(key);
            write_str(value, self.out);
        }
    }

    /// A string member whose text is a value's `Display` that never needs escaping
    /// (an address: digits, dots, colons and hex letters).
    pub fn plain_display(&mut self, key: &'static str, value: impl std::fmt::Display) {
        self.field(key);
        let from = self.out.len();
        // Writing into a Vec cannot fail.
        let _ = write!(self.out, "\"{value}\"");
        debug_assert!(!self.out[from + 1..self.out.len() - 1].iter().any(|b| *b < 0x20 || *b == b'"' || *b == b'\\'));
    }

    pub fn close(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde(text: &str) -> Vec<u8> {
        serde_json::to_vec(text).expect("a string encodes")
    }

    #[test]
    fn every_byte_escapes_as_serde_json_escapes_it_at_every_offset() {
        // Each ASCII byte, and a few of the rest, alone and at each position of
        // words with plain bytes around it.
        let mut specials: Vec<String> = (0u8..0x80).map(|b| char::from(b).to_string()).collect();
        specials.extend(["é", "\u{2028}", "\u{202e}", "\u{1F600}", "\u{7f}"].map(String::from));
        for special in &specials {
            for before in 0..17 {
                for after in [0, 1, 7, 8, 9] {
                    let text = format!("{}{special}{}", "a".repeat(before), "b".repeat(after));
                    let mut out = Vec::new();
                    write_str(&text, &mut out);
                    assert_eq!(out, serde(&text), "{text:?}");
                }
            }
        }
    }

    #[test]
    fn runs_of_escapes_and_plain_text_mix_as_serde_json_writes_them() {
        let text = "line one\nline \"two\"\\\u{0}\u{1f}\t\r\u{8}\u{c} ünïcödé \u{1F600} and the plain end";
        let mut out = Vec::new();
        write_str(text, &mut out);
        assert_eq!(out, serde(text));
        let value = serde_json::json!({"b": [1, -2.5, null, true, text], "a": {"z": {}, "y": []}, "": ""});
        let mut out = Vec::new();
        write_value(&value, &mut out);
        assert_eq!(out, serde_json::to_vec(&value).expect("json"));
    }
}
