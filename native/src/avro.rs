//! Avro binary decoding over a plan of the writer schema, keeping only the values the mapping
//! reads (its slots).
//!
//! Every function answers `None` for anything it does not take whole: bytes that end early, a
//! varint past 64 bits, a negative length, an index out of range, a boolean byte other than 0
//! or 1, text that is not UTF-8, a logical value outside the range Python converts. The caller
//! then decodes the record in Python, which has the final word (and the error message). So this
//! reader may be stricter than Python's, never looser: a record it reads, Python reads the same.

/// One node of the writer schema, expanded at each place it is used, with the slots its value
/// fills (the mapping paths that end here) and every slot filled at or below it (`below`).
pub struct Node {
    pub kind: Kind,
    pub slots: Vec<usize>,
    pub below: Vec<usize>,
}

pub enum Kind {
    Null,
    Boolean,
    /// int or long; a logical type (a timestamp, a date, a time) converts only values in `lo..=hi`
    /// in Python, and its converted value is not text the mapping takes (`logical`).
    Long { lo: i64, hi: i64, logical: bool },
    Float,
    Double,
    Bytes,
    Str,
    /// `count` symbols, the first at `first` in the plan's table of symbols.
    Enum { first: usize, count: usize },
    Fixed(usize),
    Array(Box<Node>),
    /// Values read where no path goes on (`plain`), and for the keys a path names (`keyed`).
    Map { plain: Box<Node>, keyed: Vec<(String, Node)> },
    Union(Vec<Node>),
    /// Its fields, of distinct names (the plan leaves a record naming a field twice to Python).
    Record(Vec<Node>),
}

/// What a slot found. `Other` is a value the mapping would not take as text (a record, a list,
/// bytes, a float, a converted logical value): the record is then left to Python.
#[derive(Clone)]
pub enum Value {
    Null,
    Str(usize, usize),
    Long(i64),
    Bool(bool),
    /// An enum's symbol: its place in the plan's table of symbols.
    Symbol(usize),
    Other,
}

pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    pub slots: Vec<Value>,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], at: usize, slots: usize) -> Self {
        Reader { bytes, at, slots: vec![Value::Null; slots] }
    }

    /// Reads one top-level record, and takes it only if it used every byte (random bytes often
    /// decode as a prefix; a real record uses them all).
    pub fn record(&mut self, root: &Node) -> Option<()> {
        if !matches!(root.kind, Kind::Record(_)) {
            return None;
        }
        self.node(root)?;
        (self.at == self.bytes.len()).then_some(())
    }

    pub fn text(&self, start: usize, end: usize) -> &'a str {
        // Checked as UTF-8 when it was read (`string`).
        std::str::from_utf8(&self.bytes[start..end]).unwrap_or("")
    }

    fn fill(&mut self, slots: &[usize], value: Value) {
        for &slot in slots {
            self.slots[slot] = value.clone();
        }
    }

    /// A map's value under a key written again replaces the whole of the one before in Python's
    /// dict, so what the slots below it found is forgotten before it is read: a path the new
    /// value does not reach (a null, another union branch) finds nothing, as in Python.
    fn forget(&mut self, below: &[usize]) {
        for &slot in below {
            self.slots[slot] = Value::Null;
        }
    }

    fn node(&mut self, node: &Node) -> Option<()> {
        match &node.kind {
            Kind::Null => self.fill(&node.slots, Value::Null),
            Kind::Boolean => {
                let byte = *self.bytes.get(self.at)?;
                self.at += 1;
                if byte > 1 {
                    return None;
                }
                self.fill(&node.slots, Value::Bool(byte == 1));
            }
            Kind::Long { lo, hi, logical } => {
                let value = self.long()?;
                if value < *lo || value > *hi {
                    return None;
                }
                self.fill(&node.slots, if *logical { Value::Other } else { Value::Long(value) });
            }
            Kind::Float => self.skip(4, &node.slots)?,
            Kind::Double => self.skip(8, &node.slots)?,
            Kind::Fixed(size) => self.skip(*size, &node.slots)?,
            Kind::Bytes => {
                let size = self.size()?;
                self.skip(size, &node.slots)?;
            }
            Kind::Str => {
                let (start, end) = self.string()?;
                self.fill(&node.slots, Value::Str(start, end));
            }
            Kind::Enum { first, count } => {
                let index = self.index(*count)?;
                self.fill(&node.slots, Value::Symbol(first + index));
            }
            Kind::Union(branches) => {
                let index = self.index(branches.len())?;
                self.node(&branches[index])?;
            }
            Kind::Record(fields) => {
                for field in fields {
                    self.node(field)?;
                }
                self.fill(&node.slots, Value::Other);
            }
            Kind::Array(items) => {
                while let Some(count) = self.block()? {
                    for _ in 0..count {
                        self.node(items)?;
                    }
                }
                self.fill(&node.slots, Value::Other);
            }
            Kind::Map { plain, keyed } => {
                while let Some(count) = self.block()? {
                    for _ in 0..count {
                        let (start, end) = self.string()?;
                        let key = &self.bytes[start..end];
                        let values = keyed.iter().find(|(name, _)| name.as_bytes() == key).map_or(&**plain, |(_, node)| node);
                        // A key written twice: Python's dict keeps the last value.
                        self.forget(&values.below);
                        self.node(values)?;
                    }
                }
                self.fill(&node.slots, Value::Other);
            }
        }
        Some(())
    }

    /// A zigzag varint of at most 64 bits (10 bytes, the last holding one bit).
    fn long(&mut self) -> Option<i64> {
        let mut n: u64 = 0;
        let mut shift = 0;
        loop {
            let byte = *self.bytes.get(self.at)?;
            self.at += 1;
            if shift == 63 && byte > 1 {
                return None;
            }
            n |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        Some((n >> 1) as i64 ^ -((n & 1) as i64))
    }

    fn size(&mut self) -> Option<usize> {
        let size = usize::try_from(self.long()?).ok()?;
        (size <= self.bytes.len() - self.at).then_some(size)
    }

    fn index(&mut self, count: usize) -> Option<usize> {
        let index = usize::try_from(self.long()?).ok()?;
        (index < count).then_some(index)
    }

    fn string(&mut self) -> Option<(usize, usize)> {
        let size = self.size()?;
        let start = self.at;
        std::str::from_utf8(&self.bytes[start..start + size]).ok()?;
        self.at += size;
        Some((start, self.at))
    }

    fn skip(&mut self, size: usize, slots: &[usize]) -> Option<()> {
        if size > self.bytes.len() - self.at {
            return None;
        }
        self.at += size;
        self.fill(slots, Value::Other);
        Some(())
    }

    /// The item count of the next block of an array or a map, None (inside) at its end. A
    /// negative count is followed by the block's size in bytes; every item takes at least a byte
    /// (the schema check refuses items of none), so a count past the bytes left is refused at once.
    fn block(&mut self) -> Option<Option<usize>> {
        let count = self.long()?;
        if count == 0 {
            return Some(None);
        }
        let count = if count < 0 {
            self.size()?;
            count.checked_neg()?
        } else {
            count
        };
        let count = usize::try_from(count).ok()?;
        if count > self.bytes.len() - self.at {
            return None;
        }
        Some(Some(count))
    }
}
