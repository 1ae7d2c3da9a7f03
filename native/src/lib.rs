//! The native per-record core of pisano-sms-consumer (issue 14): one record's Avro decoded and
//! mapped to a Recipient in one pass, with no dict built for the record.
//!
//! `consumer/ingest/fused.py` builds the plan (the writer schema expanded with the mapping's
//! paths, the phone rules) and calls `Fused.recipient` per record. The answer is a Recipient
//! exactly as the Python decoder and `DeclarativeMapper` give it, or None: a record this core does
//! not take whole (odd bytes, a number to parse, a value to convert), which Python then decodes
//! and maps itself, error messages and all. tests/unit/ingest/test_fused.py holds the two paths to
//! the same answers.

mod avro;
mod phones;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use avro::{Kind, Node, Reader, Value};
use phones::Phones;

const MAX_ATTRIBUTE_CHARS: usize = 1024; // consumer/ingest/mapping.py
const MAX_EVENT_ID_CHARS: usize = 256;
const MAX_PLAN_DEPTH: usize = 200; // the schema check allows 32 levels of nesting, a union and a record each
const CAMPAIGN_DASHES: [usize; 4] = [8, 13, 18, 23];

#[pyclass(frozen)]
struct Fused {
    root: Node,
    slots: usize,
    symbols: Vec<String>,
    event_id: usize,
    phone: usize,
    campaign: usize,
    custom: Vec<(Py<PyString>, usize)>,
    built_in: Vec<(Py<PyString>, usize)>,
    digits_only: bool,
    phones: Phones,
    recipient: PyObject,
}

/// Text as `_text` writes a value (consumer/ingest/mapping.py): a string (an enum's symbol too,
/// of any length) cut to MAX_ATTRIBUTE_CHARS characters, an integer in decimal, a boolean as
/// true/false; Ok(None) for null; Err for a value the core leaves to Python.
fn text<'a>(reader: &Reader<'a>, symbols: &'a [String], value: &Value) -> Result<Option<std::borrow::Cow<'a, str>>, ()> {
    use std::borrow::Cow;
    fn cut(text: &str) -> &str {
        match text.char_indices().nth(MAX_ATTRIBUTE_CHARS) {
            Some((at, _)) => &text[..at],
            None => text,
        }
    }
    Ok(Some(match value {
        Value::Null => return Ok(None),
        Value::Str(start, end) => Cow::Borrowed(cut(reader.text(*start, *end))),
        Value::Symbol(index) => Cow::Borrowed(cut(symbols[*index].as_str())),
        Value::Long(number) => Cow::Owned(number.to_string()),
        Value::Bool(flag) => Cow::Borrowed(if *flag { "true" } else { "false" }),
        Value::Other => return Err(()),
    }))
}

/// The campaign API id in its canonical form, lower case (`known_campaign`), if `text` is a UUID
/// written 8-4-4-4-12.
fn campaign_id(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    for (at, byte) in bytes.iter().enumerate() {
        let dash = CAMPAIGN_DASHES.contains(&at);
        if dash != (*byte == b'-') || (!dash && !byte.is_ascii_hexdigit()) {
            return None;
        }
    }
    Some(text.to_ascii_lowercase())
}

impl Fused {
    fn read<'py>(&self, py: Python<'py>, payload: &Bound<'py, PyBytes>, offset: usize) -> PyResult<Option<PyObject>> {
        let bytes = payload.as_bytes();
        if offset > bytes.len() {
            return Ok(None);
        }
        let mut reader = Reader::new(bytes, offset, self.slots);
        if reader.record(&self.root).is_none() {
            return Ok(None);
        }
        let Ok(Some(event_id)) = text(&reader, &self.symbols, &reader.slots[self.event_id]) else { return Ok(None) };
        let length = event_id.chars().count();
        if length == 0 || length > MAX_EVENT_ID_CHARS {
            return Ok(None);
        }
        // The phone must be a string (a number is not a phone), already in valid E.164.
        let Value::Str(start, end) = reader.slots[self.phone] else { return Ok(None) };
        let phone = reader.text(start, end);
        if !self.phones.valid_e164(py, phone) {
            return Ok(None);
        }
        let phone = if self.digits_only { &phone[1..] } else { phone };
        let Some(custom) = self.attributes(py, &reader, &self.custom)? else { return Ok(None) };
        let Some(built_in) = self.attributes(py, &reader, &self.built_in)? else { return Ok(None) };
        let Ok(Some(campaign)) = text(&reader, &self.symbols, &reader.slots[self.campaign]) else { return Ok(None) };
        let Some(campaign) = campaign_id(&campaign) else { return Ok(None) };
        let arguments = (event_id.as_ref(), campaign, phone, custom, built_in, py.None());
        Ok(Some(self.recipient.call1(py, arguments)?))
    }

    fn attributes<'py>(&self, py: Python<'py>, reader: &Reader, paths: &[(Py<PyString>, usize)]) -> PyResult<Option<Bound<'py, PyDict>>> {
        let out = PyDict::new(py);
        for (name, slot) in paths {
            match text(reader, &self.symbols, &reader.slots[*slot]) {
                Err(()) => return Ok(None),
                Ok(None) => {}
                Ok(Some(value)) => out.set_item(name.bind(py), PyString::new(py, &value))?,
            }
        }
        Ok(Some(out))
    }
}

#[pymethods]
impl Fused {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        plan: &Bound<'_, PyAny>,
        symbols: Vec<String>,
        slots: usize,
        paths: (usize, usize, usize),
        custom: Vec<(Py<PyString>, usize)>,
        built_in: Vec<(Py<PyString>, usize)>,
        digits_only: bool,
        codes: Vec<u32>,
        rule_of: PyObject,
        recipient: PyObject,
    ) -> PyResult<Self> {
        let root = node(plan, slots, symbols.len(), 0)?;
        let (event_id, phone, campaign) = paths;
        if [event_id, phone, campaign].iter().chain(custom.iter().chain(&built_in).map(|(_, slot)| slot)).any(|&slot| slot >= slots) {
            return Err(PyValueError::new_err("a mapping path names a slot past the plan's"));
        }
        let phones = Phones { codes: codes.into_iter().collect::<HashSet<_>>(), validators: RwLock::default(), rule_of };
        Ok(Fused { root, slots, symbols, event_id, phone, campaign, custom, built_in, digits_only, phones, recipient })
    }

    /// The Recipient of the record at `offset` in `payload`, or None when Python must decode and
    /// map it (module docstring). A panic here (a bug) is that record's None, never an exception
    /// into the poll loop: PyO3 would raise it as a BaseException no record guard catches.
    fn recipient<'py>(&self, py: Python<'py>, payload: &Bound<'py, PyBytes>, offset: usize) -> PyResult<Option<PyObject>> {
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.read(py, payload, offset)));
        let recipient = found.unwrap_or(Ok(None))?;
        if recipient.is_some() {
            MAPPED.fetch_add(1, Ordering::Relaxed);
        }
        Ok(recipient)
    }
}

/// One plan node from its Python form: `(kind, slots, *arguments)` (consumer/ingest/fused.py).
fn node(plan: &Bound<'_, PyAny>, slots: usize, symbols: usize, depth: usize) -> PyResult<Node> {
    if depth > MAX_PLAN_DEPTH {
        return Err(PyValueError::new_err("the plan nests too deep"));
    }
    let plan = plan.downcast::<PyTuple>()?;
    let kind: String = plan.get_item(0)?.extract()?;
    let filled: Vec<usize> = plan.get_item(1)?.extract()?;
    if filled.iter().any(|&slot| slot >= slots) {
        return Err(PyValueError::new_err("a plan node names a slot past the plan's"));
    }
    let child = |at: usize| node(&plan.get_item(at)?, slots, symbols, depth + 1);
    let children = |at: usize| -> PyResult<Vec<Node>> {
        plan.get_item(at)?.downcast::<PyList>()?.iter().map(|item| node(&item, slots, symbols, depth + 1)).collect()
    };
    let kind = match kind.as_str() {
        "null" => Kind::Null,
        "boolean" => Kind::Boolean,
        "long" => {
            let (lo, hi, logical): (i64, i64, bool) = (plan.get_item(2)?.extract()?, plan.get_item(3)?.extract()?, plan.get_item(4)?.extract()?);
            Kind::Long { lo, hi, logical }
        }
        "float" => Kind::Float,
        "double" => Kind::Double,
        "bytes" => Kind::Bytes,
        "string" => Kind::Str,
        "fixed" => Kind::Fixed(plan.get_item(2)?.extract()?),
        "enum" => {
            let (first, count): (usize, usize) = (plan.get_item(2)?.extract()?, plan.get_item(3)?.extract()?);
            if first.checked_add(count).is_none_or(|end| end > symbols) {
                return Err(PyValueError::new_err("an enum names symbols past the plan's table"));
            }
            Kind::Enum { first, count }
        }
        "array" => Kind::Array(Box::new(child(2)?)),
        "map" => {
            let keyed = plan.get_item(3)?.downcast::<PyList>()?.iter().map(|item| {
                let (key, values): (String, Bound<'_, PyAny>) = item.extract()?;
                Ok((key, node(&values, slots, symbols, depth + 1)?))
            }).collect::<PyResult<Vec<_>>>()?;
            Kind::Map { plain: Box::new(child(2)?), keyed }
        }
        "union" => Kind::Union(children(2)?),
        "record" => Kind::Record(children(2)?),
        other => return Err(PyValueError::new_err(format!("unknown plan node {other:?}"))),
    };
    let mut below = filled.clone();
    match &kind {
        Kind::Array(items) => below.extend(&items.below),
        Kind::Map { plain, keyed } => {
            below.extend(&plain.below);
            keyed.iter().for_each(|(_, values)| below.extend(&values.below));
        }
        Kind::Union(nodes) | Kind::Record(nodes) => nodes.iter().for_each(|node| below.extend(&node.below)),
        _ => {}
    }
    below.sort_unstable();
    below.dedup();
    Ok(Node { kind, slots: filled, below })
}

/// Records mapped natively by every plan of this process, for the metric (consumer/pipeline.py).
static MAPPED: AtomicU64 = AtomicU64::new(0);

#[pyfunction]
fn records_mapped() -> u64 {
    MAPPED.load(Ordering::Relaxed)
}

#[pymodule]
fn pisano_native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Fused>()?;
    module.add_function(wrap_pyfunction!(records_mapped, module)?)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
