//! What a parsed JSON value has already forgotten, checked on an item's bytes: the
//! text of every number and whether a key repeats.
//!
//! An acknowledged event must be recorded exactly as sent, and its hash must verify
//! from what each store gives back. A number is kept exactly by every tier (serde's
//! 64-bit integers and floats, Postgres `jsonb`, SQLite text) when its value is a
//! 64-bit integer, or the value of the shortest text of the 64-bit float it reads as
//! (as serde_json writes it: where two shortest texts tie, the one it picks).
//! Anything else would be silently changed (`0.1000000000000000055`, `1e-400`,
//! `18446744073709551616`) or would come back changed from Postgres (`-0.0` comes back
//! as `0.0`), so it is refused, naming the field. A repeated key would silently keep
//! only its last value, so it is refused too.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::Write as _;

use serde_json::{Number, Value};

/// One problem found in an item's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field, dotted, with `[i]` for array positions (`details.amounts[2]`).
    pub field: String,
    pub reason: &'static str,
}

/// What the scan of one item found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    pub problems: Vec<Problem>,
    /// A float of 1e16 or more in size is held: [`settle_wide_floats`] must run.
    pub wide_floats: bool,
}

const NEGATIVE_ZERO: &str = "is negative zero, which Postgres keeps as 0: send 0";
const BEYOND_64_BITS: &str =
    "is an integer beyond 64 bits and cannot be kept exactly: send it as a string";
const UNDERFLOW: &str = "is too small for a 64-bit float and would be kept as 0: send it as a string";
const TOO_PRECISE: &str =
    "has more digits than a 64-bit float keeps, so it would be rounded: send it as a string";
pub const OUT_OF_RANGE: &str = "is out of the range of a 64-bit float: send it as a string";
const REPEATED_KEY: &str = "appears more than once in its object";

/// Objects with more keys than this look repeats up in a hash set.
const LINEAR_KEYS: usize = 16;
/// Nesting past this is not scanned: serde's parser refuses it (at 128), and the
/// scan of a refused item must not recurse without bound.
const MAX_DEPTH: usize = 128;

/// Scans one item's JSON text (already known to be valid JSON).
pub fn scan(raw: &[u8]) -> Scan {
    let mut scanner = Scanner { bytes: raw, pos: 0, depth: 0, path: String::new(), spare_keys: Vec::new(), scan: Scan::default() };
    scanner.value();
    scanner.scan
}

/// Scans a value that was not read from bytes (tools and tests), through its text.
pub fn scan_value(value: &Value) -> Scan {
    scan(&serde_json::to_vec(value).unwrap_or_default())
}

struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Objects and arrays open around the value being scanned.
    depth: usize,
    /// The path of the value being scanned.
    path: String,
    /// Key lists of objects already scanned, kept for the next ones.
    spare_keys: Vec<Vec<Cow<'a, str>>>,
    scan: Scan,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> u8 {
        self.bytes.get(self.pos).copied().unwrap_or(0)
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), b' ' | b'\t' | b'\n' | b'\r') {
            self.pos += 1;
        }
    }

    fn fail(&mut self, reason: &'static str) {
        self.scan.problems.push(Problem { field: self.path.clone(), reason });
    }

    fn value(&mut self) {
        self.skip_whitespace();
        if self.depth >= MAX_DEPTH {
            self.pos = self.bytes.len();
            return;
        }
        match self.peek() {
            b'{' => {
                self.depth += 1;
                self.object();
                self.depth -= 1;
            }
            b'[' => {
                self.depth += 1;
                self.array();
                self.depth -= 1;
            }
            b'"' => {
                self.skip_string();
            }
            b't' | b'n' => self.pos += 4,
            b'f' => self.pos += 5,
            b'-' | b'0'..=b'9' => self.number(),
            // Not JSON: the parser that ran first has refused it already.
            _ => self.pos = self.bytes.len(),
        }
    }

    fn object(&mut self) {
        self.pos += 1;
        let mut keys = self.spare_keys.pop().unwrap_or_default();
        let mut many: HashSet<Cow<'a, str>, foldhash::fast::RandomState> = HashSet::default();
        loop {
            self.skip_whitespace();
            match self.peek() {
                b'}' => {
                    self.pos += 1;
                    break;
                }
                b',' => {
                    self.pos += 1;
                    continue;
                }
                b'"' => {}
                _ => {
                    self.pos = self.bytes.len();
                    break;
                }
            }
            let key = self.key();
            self.skip_whitespace();
            self.pos += 1; // the colon
            let outer = self.path.len();
            if !self.path.is_empty() {
                self.path.push('.');
            }
            self.path.push_str(&key);
            let repeated = if many.is_empty() && keys.len() < LINEAR_KEYS {
                let repeated = keys.contains(&key);
                keys.push(key);
                repeated
            } else {
                many.extend(keys.drain(..));
                !many.insert(key)
            };
            if repeated {
                self.fail(REPEATED_KEY);
            }
            self.value();
            self.path.truncate(outer);
        }
        // Objects are many and small: their key lists are reused.
        keys.clear();
        self.spare_keys.push(keys);
    }

    fn array(&mut self) {
        self.pos += 1;
        let mut index = 0usize;
        loop {
            self.skip_whitespace();
            match self.peek() {
                b']' => {
                    self.pos += 1;
                    return;
                }
                b',' => {
                    self.pos += 1;
                    index += 1;
                    continue;
                }
                0 => return,
                _ => {}
            }
            let outer = self.path.len();
            // Writing into a String cannot fail.
            let _ = write!(self.path, "[{index}]");
            self.value();
            self.path.truncate(outer);
        }
    }

    /// Moves past a string; returns whether it holds escapes.
    fn skip_string(&mut self) -> bool {
        self.pos += 1;
        let mut escaped = false;
        loop {
            match memchr::memchr2(b'"', b'\\', &self.bytes[self.pos.min(self.bytes.len())..]) {
                None => {
                    self.pos = self.bytes.len();
                    return escaped;
                }
                Some(offset) => {
                    self.pos += offset;
                    if self.bytes[self.pos] == b'\\' {
                        escaped = true;
                        // A backslash as the last byte (invalid JSON) ends the text.
                        self.pos = (self.pos + 2).min(self.bytes.len());
                    } else {
                        self.pos += 1;
                        return escaped;
                    }
                }
            }
        }
    }

    /// Moves past a key and returns its text, unescaped only when it holds escapes.
    fn key(&mut self) -> Cow<'a, str> {
        let start = self.pos;
        let escaped = self.skip_string();
        let quoted = &self.bytes[start..self.pos];
        if quoted.len() < 2 || !quoted.ends_with(b"\"") {
            return Cow::Borrowed("");
        }
        if escaped {
            Cow::Owned(serde_json::from_slice::<String>(quoted).unwrap_or_default())
        } else {
            Cow::Borrowed(std::str::from_utf8(&quoted[1..quoted.len() - 1]).unwrap_or_default())
        }
    }

    fn number(&mut self) {
        let start = self.pos;
        while matches!(self.peek(), b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
            self.pos += 1;
        }
        let text = std::str::from_utf8(&self.bytes[start..self.pos]).unwrap_or_default();
        match check_number(text) {
            Ok(wide) => self.scan.wide_floats |= wide,
            Err(reason) => self.fail(reason),
        }
    }
}

/// Whether the number written `text` is kept exactly; `Ok(true)` for a float of
/// 1e16 or more in size.
fn check_number(text: &str) -> Result<bool, &'static str> {
    let negative = text.starts_with('-');
    if !text.contains(['.', 'e', 'E']) {
        if text == "-0" {
            return Err(NEGATIVE_ZERO);
        }
        return match (text.parse::<i64>(), text.parse::<u64>()) {
            (Err(_), Err(_)) => Err(BEYOND_64_BITS),
            _ => Ok(false),
        };
    }
    let float: f64 = text.parse().map_err(|_| OUT_OF_RANGE)?;
    if !float.is_finite() {
        return Err(OUT_OF_RANGE);
    }
    let sent = Decimal::of(text).ok_or(TOO_PRECISE)?;
    if float == 0.0 {
        return match (sent.is_zero(), negative) {
            (false, _) => Err(UNDERFLOW),
            (true, true) => Err(NEGATIVE_ZERO),
            (true, false) => Ok(false),
        };
    }
    // The text every tier will hold is serde_json's shortest form of the float. Where
    // two shortest texts read as the same float (a tie), it picks one, and the other
    // would be stored as a different decimal: only the one it writes is exact.
    let written = serde_json::to_string(&float).map_err(|_| OUT_OF_RANGE)?;
    if Decimal::of(&written) != Some(sent) {
        return Err(TOO_PRECISE);
    }
    Ok(float.abs() >= 1e16)
}

/// A decimal number's exact value: sign, significant digits (no leading or trailing
/// zeros) and the power of ten of the last digit.
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: String,
    exponent: i64,
}

impl Decimal {
    /// Reads JSON number text; `None` when its exponent is beyond any use.
    fn of(text: &str) -> Option<Decimal> {
        let negative = text.starts_with('-');
        let unsigned = text.trim_start_matches('-');
        let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
            Some(at) => (&unsigned[..at], unsigned[at + 1..].trim_start_matches('+').parse::<i64>().ok()?),
            None => (unsigned, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let mut digits: String = int.chars().chain(frac.chars()).collect();
        let mut exponent = exponent.checked_sub(i64::try_from(frac.len()).ok()?)?;
        let trailing = digits.len() - digits.trim_end_matches('0').len();
        digits.truncate(digits.len() - trailing);
        exponent = exponent.checked_add(i64::try_from(trailing).ok()?)?;
        let digits = digits.trim_start_matches('0').to_owned();
        if digits.is_empty() {
            exponent = 0;
        }
        Some(Decimal { negative: negative && !digits.is_empty(), digits, exponent })
    }

    fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }
}

/// Turns every float of 1e16 or more in size whose value, as written shortest, is a
/// 64-bit integer into that integer: Postgres keeps that decimal value and gives it
/// back without an exponent or a point, which reads as an integer, so the event must
/// hold it as one from the start. (The integer is the decimal the client sent, not
/// the float's binary value: `3.0848404155534163e17` is 308484041555341630.)
pub fn settle_wide_floats(value: &mut Value) {
    match value {
        Value::Number(number) => {
            let Some(float) = number.as_f64().filter(|f| number.is_f64() && f.abs() >= 1e16) else { return };
            if let Some(whole) = whole_number(float) {
                *number = whole;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(settle_wide_floats),
        Value::Object(map) => map.values_mut().for_each(settle_wide_floats),
        _ => {}
    }
}

/// The 64-bit integer a float of 1e16 or more in size is written as (by serde_json,
/// in exponent form at that size), if it fits.
fn whole_number(float: f64) -> Option<Number> {
    let text = serde_json::to_string(&float).ok()?;
    let (mantissa, exponent) = text.split_once(['e', 'E'])?;
    let exponent: usize = exponent.trim_start_matches('+').parse().ok()?;
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.trim_start_matches('-').chars().filter(char::is_ascii_digit).collect();
    let zeros = (exponent + 1).checked_sub(digits.len())?;
    let whole = format!("{}{digits}{}", if negative { "-" } else { "" }, "0".repeat(zeros));
    if negative {
        whole.parse::<i64>().ok().map(Number::from)
    } else {
        whole.parse::<u64>().ok().map(Number::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<(String, &'static str)> {
        scan(text.as_bytes()).problems.into_iter().map(|p| (p.field, p.reason)).collect()
    }

    #[test]
    fn numbers_that_every_tier_keeps_pass() {
        for good in [
            "0", "-1", "1.5", "0.1", "1e5", "1E-5", "0.10", "-0.5", "0e7", "0.0",
            "9223372036854775807", "-9223372036854775808", "18446744073709551615",
            "5e-324", "2.2250738585072014e-308", "1.7976931348623157e308", "123456789.125",
            "2212628151889387.2",
        ] {
            assert_eq!(problems(&format!("{{\"x\":{good}}}")), [], "{good}");
        }
    }

    #[test]
    fn numbers_that_would_change_are_refused_by_path() {
        for (bad, reason) in [
            ("-0", NEGATIVE_ZERO),
            ("-0.0", NEGATIVE_ZERO),
            ("-0e5", NEGATIVE_ZERO),
            ("-1e-400", UNDERFLOW),
            ("1e-400", UNDERFLOW),
            ("18446744073709551616", BEYOND_64_BITS),
            ("-9223372036854775809", BEYOND_64_BITS),
            ("0.1000000000000000055511151231257827", TOO_PRECISE),
            ("9007199254740993.0", TOO_PRECISE),
            ("1.00000000000000000001", TOO_PRECISE),
            // Both read as the float 2212628151889387.25; serde_json writes the ".2".
            ("2212628151889387.3", TOO_PRECISE),
        ] {
            assert_eq!(problems(&format!("{{\"d\":{{\"a\":[1,{bad}]}}}}")), [("d.a[1]".to_owned(), reason)], "{bad}");
        }
    }

    #[test]
    fn repeated_keys_are_refused_at_any_depth_even_when_spelled_with_escapes() {
        assert_eq!(problems(r#"{"id":"a","id":"b"}"#), [("id".to_owned(), REPEATED_KEY)]);
        assert_eq!(problems(r#"{"d":{"k":1,"\u006b":2}}"#), [("d.k".to_owned(), REPEATED_KEY)]);
        assert_eq!(problems(r#"{"d":[{"k":1},{"k":2}],"e":{"k":{}}}"#), []);
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        assert_eq!(problems(&format!("{{{},\"k3\":0}}", many.join(","))), [("k3".to_owned(), REPEATED_KEY)]);
        assert_eq!(problems(&format!("{{{}}}", many.join(","))), []);
    }

    #[test]
    fn nesting_beyond_the_parser_limit_ends_the_scan_without_recursing_further() {
        let deep = format!("{}1e400{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(problems(&deep), []);
        let shallow = format!("{{\"a\":{}1e400{}}}", "[".repeat(3), "]".repeat(3));
        assert_eq!(problems(&shallow), [("a[0][0][0]".to_owned(), OUT_OF_RANGE)]);
    }

    #[test]
    fn text_cut_inside_a_string_or_after_a_backslash_ends_the_scan() {
        for cut in [&b"{\"a\\"[..], b"{\"a", b"{\"k\":\"v\\", b"[\"\\", b"\"\\\\\\"] {
            assert_eq!(scan(cut).problems, []);
        }
    }

    #[test]
    fn strings_that_look_like_numbers_or_keys_are_skipped() {
        assert_eq!(problems(r#"{"a":"-0.0 \" , \"a\": 1e-400","b":"\\","c":-1}"#), []);
    }

    #[test]
    fn wide_floats_become_the_integers_postgres_gives_back() {
        assert!(scan(b"{\"x\":[1.5e16]}").wide_floats);
        assert!(!scan(b"{\"x\":9999999999999998.0}").wide_floats);
        let mut value: Value =
            serde_json::from_str(r#"{"a":[1e16,-2.5e17,1.8e19,2e19,-1e19,1.5,7,-3.0848404155534163e17]}"#).expect("json");
        settle_wide_floats(&mut value);
        assert_eq!(
            serde_json::to_string(&value).expect("json"),
            r#"{"a":[10000000000000000,-250000000000000000,18000000000000000000,2e+19,-1e+19,1.5,7,-308484041555341630]}"#
        );
    }
}
