//! A number already in E.164, judged valid by phonenumbers' own patterns for its calling code:
//! the rule of `consumer/ingest/phones.py` (`is_valid_e164`), with the patterns handed over by
//! Python when the plan is built. Only a "valid" verdict is taken from here; anything else goes
//! through Python's full parser, which has the final word.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use pyo3::prelude::*;
use regex::Regex;

/// phonenumbers' validity rule for one calling code of one region: the national number matches
/// the general description (and one of its lengths, if it lists any) and one number type that
/// allows its length (`by_length`), or one that lists no length (`any_length`).
pub struct Validator {
    pub general: Regex,
    pub lengths: Vec<usize>,
    pub by_length: HashMap<usize, Regex>,
    pub any_length: Option<Regex>,
}

impl Validator {
    fn valid(&self, national: &str) -> bool {
        if !self.lengths.is_empty() && !self.lengths.contains(&national.len()) {
            return false;
        }
        let types = self.by_length.get(&national.len()).or(self.any_length.as_ref());
        types.is_some_and(|types| self.general.is_match(national) && types.is_match(national))
    }
}

pub struct Phones {
    /// Every calling code phonenumbers knows (calling codes are prefix-free).
    pub codes: HashSet<u32>,
    /// The rule of each calling code met so far, None for one Python judges (a calling code
    /// several regions share, or a pattern this regex engine does not take). Asked of `rule_of`
    /// the first time a code is met: loading every region's metadata at start-up costs more than
    /// a run of thousands of events.
    pub validators: RwLock<HashMap<u32, Option<Validator>>>,
    /// Python's `rule_of(calling code)`: (general, lengths, {length: types}, any-length types) or None.
    pub rule_of: PyObject,
}

impl Phones {
    /// Whether `raw` is `+`, a digit other than 0 and 6 to 14 more ASCII digits, valid for its
    /// calling code (`is_valid_e164`); false for anything this cannot decide.
    pub fn valid_e164(&self, py: Python<'_>, raw: &str) -> bool {
        let bytes = raw.as_bytes();
        if !(8..=16).contains(&bytes.len()) || bytes[0] != b'+' || bytes[1] == b'0'
            || !bytes[1..].iter().all(u8::is_ascii_digit)
        {
            return false;
        }
        let digits = &raw[1..];
        for length in 1..=3 {
            let code: u32 = digits[..length].parse().unwrap_or(0);
            if self.codes.contains(&code) {
                let national = &digits[length..];
                if national.is_empty() || national.starts_with('0') {
                    return false;
                }
                return self.valid(py, code, national);
            }
        }
        false
    }
}

impl Phones {
    fn valid(&self, py: Python<'_>, code: u32, national: &str) -> bool {
        if let Ok(known) = self.validators.read() {
            if let Some(rule) = known.get(&code) {
                return rule.as_ref().is_some_and(|rule| rule.valid(national));
            }
        }
        let rule = self.rule_of.call1(py, (code,)).ok().and_then(|rule| validator(rule.bind(py)).ok().flatten());
        let valid = rule.as_ref().is_some_and(|rule| rule.valid(national));
        if let Ok(mut known) = self.validators.write() {
            known.insert(code, rule);
        }
        valid
    }
}

/// A calling code's rule from `(general, lengths, {length: types}, any-length types or None)`,
/// or None (Python's answer for a code it judges itself, or a pattern this engine refuses).
fn validator(rule: &Bound<'_, PyAny>) -> PyResult<Option<Validator>> {
    if rule.is_none() {
        return Ok(None);
    }
    let (general, lengths, by_length, any_length): (String, Vec<usize>, HashMap<usize, String>, Option<String>) = rule.extract()?;
    let compiled = (|| -> Result<Validator, regex::Error> {
        Ok(Validator {
            general: whole(&general)?,
            lengths,
            by_length: by_length.iter().map(|(length, types)| Ok((*length, whole(types)?))).collect::<Result<_, regex::Error>>()?,
            any_length: any_length.as_deref().map(whole).transpose()?,
        })
    })();
    Ok(compiled.ok())
}

/// A pattern matched against the whole text, as Python's `fullmatch`.
pub fn whole(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}
