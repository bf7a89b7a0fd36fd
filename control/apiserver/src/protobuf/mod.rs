//! Decoding of Kubernetes protobuf request bodies
//! (`Content-Type: application/vnd.kubernetes.protobuf`) into the JSON shape
//! the rest of the API server works with.
//!
//! kubectl's typed commands (`kubectl create configmap|secret|deployment|...`)
//! and every client-go typed client send protobuf. The body is
//!
//! ```text
//! "k8s\0" ++ runtime.Unknown {
//!     1: typeMeta { 1: apiVersion, 2: kind }
//!     2: raw              // the object's own message
//!     3: contentEncoding  // empty (no compression)
//!     4: contentType      // empty
//! }
//! ```
//!
//! The object message is walked with a compact schema table (`schema.rs`,
//! generated from the Kubernetes v1.33 Go types by `gen_schema.py`): for each
//! message, field number -> (JSON name, value type, emission rule). The output
//! is the JSON that Kubernetes' own JSON encoding of the decoded Go object
//! would give, which is what kubectl would have sent as JSON:
//!
//! * Go value fields are always on the wire (gogo-protobuf writes them even when
//!   zero); those tagged `omitempty` are dropped when zero (`Rule::Opt`),
//!   the others kept (`Rule::Req`). Pointer fields are on the wire only when
//!   set and are kept even when zero (`Rule::Ptr`). Embedded structs
//!   (`VolumeSource` in `Volume`, ...) are their own message on the wire but
//!   are flattened into the parent in JSON (`Rule::Inline`).
//! * `metav1.Time` {seconds, nanos} -> RFC 3339 string at second precision,
//!   `MicroTime` -> RFC 3339 with microseconds; an empty message is the zero
//!   time, which Go writes as `null`, so it is left out.
//! * `intstr.IntOrString` {type, intVal, strVal} -> a number or a string;
//!   `resource.Quantity` {string} -> the string; `FieldsV1` {Raw} -> the JSON
//!   it holds; `bytes` -> base64; maps -> objects; repeated -> arrays.
//! * Unknown field numbers are skipped. Malformed input is an `Err` naming the
//!   problem and where it was found; nothing here panics.
//!
//! `apiVersion` and `kind` come from the envelope and lead the object.

#[rustfmt::skip]
mod auth_schema;
#[rustfmt::skip]
mod schema;

use base64::Engine;
use serde_json::{Map, Value};

/// The 4-byte prefix of every Kubernetes protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// Nesting bound; the schema itself is at most ~12 deep.
const MAX_DEPTH: usize = 64;

/// Decodes a Kubernetes protobuf request body into the object's JSON form
/// (with `apiVersion` and `kind` from the envelope).
pub fn decode_protobuf(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("the body does not start with the Kubernetes protobuf prefix \"k8s\\0\"")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    let (mut encoding, mut content_type) = (String::new(), String::new());
    for field in Fields(rest) {
        match field.map_err(|e| format!("runtime.Unknown: {e}"))? {
            (1, Wire::Len(tm)) => {
                for field in Fields(tm) {
                    match field.map_err(|e| format!("runtime.Unknown.typeMeta: {e}"))? {
                        (1, Wire::Len(b)) => api_version = utf8(b, "typeMeta.apiVersion")?,
                        (2, Wire::Len(b)) => kind = utf8(b, "typeMeta.kind")?,
                        (1 | 2, _) => {
                            return Err("runtime.Unknown.typeMeta: wrong wire type".into())
                        }
                        _ => {}
                    }
                }
            }
            (2, Wire::Len(b)) => raw = b,
            (3, Wire::Len(b)) => encoding = utf8(b, "runtime.Unknown.contentEncoding")?,
            (4, Wire::Len(b)) => content_type = utf8(b, "runtime.Unknown.contentType")?,
            (1..=4, _) => return Err("runtime.Unknown: wrong wire type".into()),
            _ => {}
        }
    }
    if !encoding.is_empty() {
        return Err(format!(
            "unsupported protobuf content encoding {encoding:?}"
        ));
    }
    if !content_type.is_empty() && !content_type.contains("protobuf") {
        return Err(format!(
            "unsupported embedded content type {content_type:?}"
        ));
    }
    if kind.is_empty() {
        return Err("the protobuf envelope names no kind".into());
    }
    let msg = schema::ROOTS
        .iter()
        .chain(auth_schema::ROOTS)
        .find(|(gv, k, _)| *k == kind && (gv.is_empty() || *gv == api_version))
        .map(|(_, _, m)| *m)
        .ok_or_else(|| {
            format!("cannot decode {kind} ({api_version}) from protobuf: not a supported kind")
        })?;
    let fields = decode_message(raw, msg, 0)?;
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), Value::String(api_version));
    obj.insert("kind".into(), Value::String(kind));
    for (k, v) in fields {
        obj.entry(k).or_insert(v);
    }
    Ok(Value::Object(obj))
}

/// A message: its Kubernetes name (for error messages) and its fields.
struct Message(&'static str, &'static [Field]);

struct Field {
    num: u32,
    name: &'static str,
    ty: Ty,
    rule: Rule,
}

const fn f(num: u32, name: &'static str, ty: Ty, rule: Rule) -> Field {
    Field {
        num,
        name,
        ty,
        rule,
    }
}

/// The value type of a field (of each element, for repeated fields).
#[derive(Clone, Copy)]
enum Ty {
    Str,
    Bytes,
    Bool,
    I32,
    I64,
    Time,
    MicroTime,
    IntOrStr,
    Quantity,
    FieldsV1,
    Msg(&'static Message),
    /// `map<string, V>`: repeated {1: key, 2: value} entries -> a JSON object.
    Map(&'static Ty),
}

/// How a field present on the wire ends up in the JSON object.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// A Go value field without `omitempty`: always written.
    Req,
    /// A Go value field with `omitempty`: left out when zero.
    Opt,
    /// A Go pointer field: written when present, even when zero.
    Ptr,
    /// A slice (JSON array) or map (JSON object), one wire record per element.
    Rep,
    /// An embedded struct: its fields are merged into the parent object.
    Inline,
}

/// One wire record's payload.
#[derive(Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Len(&'a [u8]),
    /// A 64- or 32-bit fixed-size value: no Kubernetes field in the schema
    /// uses one, so it is only skipped (or rejected for a known field).
    Fixed,
}

/// Iterator over the (field number, payload) records of a message; yields
/// one `Err` and stops at the first malformed record.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Wire<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let r = self.record();
        if r.is_err() {
            self.0 = &[];
        }
        Some(r)
    }
}

impl<'a> Fields<'a> {
    fn record(&mut self) -> Result<(u32, Wire<'a>), String> {
        let key = self.varint()?;
        let num = key >> 3;
        if num == 0 || num > (1 << 29) - 1 {
            return Err(format!("invalid field number {num}"));
        }
        let num = num as u32;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.bytes(8)?;
                Wire::Fixed
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| "length overflows".to_string())?;
                Wire::Len(self.bytes(len)?)
            }
            5 => {
                self.bytes(4)?;
                Wire::Fixed
            }
            wt => return Err(format!("unsupported wire type {wt} for field {num}")),
        };
        Ok((num, wire))
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some((&b, rest)) = self.0.split_first() else {
                return Err("truncated varint".into());
            };
            self.0 = rest;
            if i == 9 && b > 1 {
                return Err("varint overflows 64 bits".into());
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint overflows 64 bits".into())
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err(format!(
                "truncated: {n} bytes expected, {} left",
                self.0.len()
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
}

fn utf8(b: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| format!("{what}: string is not valid UTF-8"))
}

fn decode_message(buf: &[u8], msg: &Message, depth: usize) -> Result<Map<String, Value>, String> {
    let Message(msg_name, fields) = *msg;
    if depth > MAX_DEPTH {
        return Err(format!("{msg_name}: nested too deeply"));
    }
    let mut out = Map::new();
    for record in Fields(buf) {
        let (num, wire) = record.map_err(|e| format!("{msg_name}: {e}"))?;
        let Some(field) = fields.iter().find(|f| f.num == num) else {
            continue; // unknown field: skipped, as protobuf requires
        };
        decode_field(field, wire, &mut out, depth)
            .map_err(|e| format!("{msg_name}.{}: {e}", field_label(field)))?;
    }
    Ok(out)
}

fn field_label(field: &Field) -> &'static str {
    if field.name.is_empty() {
        match field.ty {
            Ty::Msg(Message(name, _)) => name,
            _ => "(inline)",
        }
    } else {
        field.name
    }
}

fn decode_field(
    field: &Field,
    wire: Wire<'_>,
    out: &mut Map<String, Value>,
    depth: usize,
) -> Result<(), String> {
    let name = field.name;
    match (field.rule, field.ty) {
        (Rule::Rep, Ty::Map(vty)) => {
            let Wire::Len(entry) = wire else {
                return Err("wrong wire type for a map entry".into());
            };
            let (mut key, mut value) = (String::new(), None);
            for rec in Fields(entry) {
                match rec? {
                    (1, Wire::Len(b)) => key = utf8(b, "map key")?,
                    (1, _) => return Err("wrong wire type for a map key".into()),
                    (2, w) => value = Some(decode_value(*vty, w, depth + 1)?),
                    _ => {}
                }
            }
            let value = match value {
                Some(v) => v,
                None => decode_value(*vty, Wire::Len(&[]), depth + 1)?, // absent: zero value
            };
            object_at(out, name)?.insert(key, value);
        }
        (Rule::Rep, ty) => {
            let packed = matches!(ty, Ty::Bool | Ty::I32 | Ty::I64);
            match wire {
                Wire::Len(b) if packed => {
                    let mut items = Vec::new();
                    let mut r = Fields(b);
                    while !r.0.is_empty() {
                        items.push(decode_value(ty, Wire::Varint(r.varint()?), depth)?);
                    }
                    array_at(out, name)?.extend(items);
                }
                w => {
                    let v = decode_value(ty, w, depth)?;
                    array_at(out, name)?.push(v);
                }
            }
        }
        (Rule::Inline, ty) => {
            let Value::Object(inner) = decode_value(ty, wire, depth)? else {
                return Err("an inline field must be a message".into());
            };
            out.extend(inner);
        }
        (rule, ty) => {
            let v = decode_value(ty, wire, depth)?;
            let zero_scalar = match &v {
                Value::String(s) => s.is_empty() && matches!(ty, Ty::Str | Ty::Bytes),
                Value::Bool(b) => !b,
                Value::Number(n) => n.as_f64() == Some(0.0) && matches!(ty, Ty::I32 | Ty::I64),
                _ => false,
            };
            if v.is_null() || (rule == Rule::Opt && zero_scalar) {
                // zero time (Go writes null) or zero omitempty value; a later
                // record for the same field wins, so clear any earlier one.
                out.remove(name);
            } else if let (Some(Value::Object(old)), Value::Object(new)) = (out.get_mut(name), &v) {
                // protobuf merges repeated records of a message field
                old.extend(new.clone());
            } else {
                out.insert(name.to_string(), v);
            }
        }
    }
    Ok(())
}

fn array_at<'m>(out: &'m mut Map<String, Value>, name: &str) -> Result<&'m mut Vec<Value>, String> {
    match out.entry(name).or_insert_with(|| Value::Array(Vec::new())) {
        Value::Array(a) => Ok(a),
        _ => Err("conflicting field types".into()),
    }
}

fn object_at<'m>(
    out: &'m mut Map<String, Value>,
    name: &str,
) -> Result<&'m mut Map<String, Value>, String> {
    match out.entry(name).or_insert_with(|| Value::Object(Map::new())) {
        Value::Object(o) => Ok(o),
        _ => Err("conflicting field types".into()),
    }
}

/// Decodes one value; `Value::Null` means "the zero time" (left out).
fn decode_value(ty: Ty, wire: Wire<'_>, depth: usize) -> Result<Value, String> {
    let wrong = || format!("wrong wire type for a {} value", ty_name(ty));
    Ok(match (ty, wire) {
        (Ty::Str, Wire::Len(b)) => Value::String(utf8(b, "string")?),
        (Ty::Bytes, Wire::Len(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (Ty::Bool, Wire::Varint(v)) => Value::Bool(v != 0),
        (Ty::I32, Wire::Varint(v)) => Value::from(v as i32), // proto int32: low 32 bits
        (Ty::I64, Wire::Varint(v)) => Value::from(v as i64),
        (Ty::Time | Ty::MicroTime, Wire::Len(b)) => time(b, matches!(ty, Ty::MicroTime))?,
        (Ty::IntOrStr, Wire::Len(b)) => {
            let (mut kind, mut int, mut s) = (0u64, 0i32, String::new());
            for rec in Fields(b) {
                match rec? {
                    (1, Wire::Varint(v)) => kind = v,
                    (2, Wire::Varint(v)) => int = v as i32,
                    (3, Wire::Len(b)) => s = utf8(b, "IntOrString.strVal")?,
                    (1..=3, _) => return Err("IntOrString: wrong wire type".into()),
                    _ => {}
                }
            }
            match kind {
                0 => Value::from(int),
                1 => Value::String(s),
                k => return Err(format!("IntOrString: invalid type {k}")),
            }
        }
        (Ty::Quantity, Wire::Len(b)) => {
            let mut s = String::new();
            for rec in Fields(b) {
                match rec? {
                    (1, Wire::Len(b)) => s = utf8(b, "Quantity")?,
                    (1, _) => return Err("Quantity: wrong wire type".into()),
                    _ => {}
                }
            }
            Value::String(if s.is_empty() { "0".into() } else { s })
        }
        (Ty::FieldsV1, Wire::Len(b)) => {
            let mut raw: &[u8] = &[];
            for rec in Fields(b) {
                match rec? {
                    (1, Wire::Len(b)) => raw = b,
                    (1, _) => return Err("FieldsV1: wrong wire type".into()),
                    _ => {}
                }
            }
            if raw.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(raw).map_err(|e| format!("FieldsV1 is not JSON: {e}"))?
            }
        }
        (Ty::Msg(m), Wire::Len(b)) => Value::Object(decode_message(b, m, depth + 1)?),
        _ => return Err(wrong()),
    })
}

fn ty_name(ty: Ty) -> &'static str {
    match ty {
        Ty::Str => "string",
        Ty::Bytes => "bytes",
        Ty::Bool => "bool",
        Ty::I32 => "int32",
        Ty::I64 => "int64",
        Ty::Time => "Time",
        Ty::MicroTime => "MicroTime",
        Ty::IntOrStr => "IntOrString",
        Ty::Quantity => "Quantity",
        Ty::FieldsV1 => "FieldsV1",
        Ty::Msg(Message(name, _)) => name,
        Ty::Map(_) => "map",
    }
}

/// `metav1.Time` / `MicroTime` {1: seconds, 2: nanos} -> RFC 3339 (UTC).
/// An empty message is Go's zero time, which JSON writes as null.
fn time(b: &[u8], micro: bool) -> Result<Value, String> {
    if b.is_empty() {
        return Ok(Value::Null);
    }
    let (mut secs, mut nanos) = (0i64, 0i32);
    for rec in Fields(b) {
        match rec? {
            (1, Wire::Varint(v)) => secs = v as i64,
            (2, Wire::Varint(v)) => nanos = v as i32,
            (1 | 2, _) => return Err("Time: wrong wire type".into()),
            _ => {}
        }
    }
    if !(0..1_000_000_000).contains(&nanos) {
        return Err(format!("Time: nanos {nanos} out of range"));
    }
    // Time keeps whole seconds; MicroTime keeps microseconds.
    let nanos = if micro { nanos / 1000 * 1000 } else { 0 };
    let ts = jiff::Timestamp::new(secs, nanos).map_err(|e| format!("Time: {e}"))?;
    let civil = ts.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    if !(0..=9999).contains(&civil.year()) {
        return Err(format!("Time: year {} outside 0..=9999", civil.year()));
    }
    let mut s = ts.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    if micro {
        s.push_str(&format!(".{:06}", nanos / 1000));
    }
    s.push('Z');
    Ok(Value::String(s))
}

#[cfg(test)]
mod tests;
