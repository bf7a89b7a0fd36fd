//! Label and field selectors, with the syntax and semantics of the Kubernetes
//! API server.
//!
//! kubectl sends `labelSelector` (`get -l`, `logs deploy/x`, `rollout
//! history`) and `fieldSelector` (informer waits pin `metadata.name`,
//! `describe node` filters pods by `spec.nodeName` and `status.phase`,
//! `describe` filters events by `involvedObject.*`). Both must parse and match
//! exactly like the real server, and reject what it rejects with a message a
//! user can act on, because kubectl prints the server's message verbatim.
//!
//! Everything here is pure: no I/O, no panics on any input.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as TypedLabelSelector;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// Longest label name part and label value that Kubernetes accepts.
const MAX_LABEL_LEN: usize = 63;
/// Longest DNS-1123 subdomain, the limit for a label key prefix.
const MAX_PREFIX_LEN: usize = 253;

/// How one requirement compares a label with its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `a=b`
    Equals,
    /// `a==b`: the same test as `=`, kept apart so the string form round-trips.
    DoubleEquals,
    /// `a!=b`: true also when the label is absent.
    NotEquals,
    /// `a in (x,y)`
    In,
    /// `a notin (x,y)`: true also when the label is absent.
    NotIn,
    /// `a`
    Exists,
    /// `!a`
    DoesNotExist,
    /// `a>5`: integer comparison, false when the label is not an integer.
    GreaterThan,
    /// `a<5`
    LessThan,
}

/// One `key op values` term of a label selector.
#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
    /// Sorted and de-duplicated, as Kubernetes keeps them in a string set, so
    /// that the printed form is canonical.
    values: Vec<String>,
}

/// A parsed label selector: the AND of its requirements, sorted by key.
/// An empty selector matches every object.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelSelector {
    reqs: Vec<Requirement>,
}

impl LabelSelector {
    /// Kubernetes label selector syntax: `a=b`, `a==b`, `a!=b`, `a in (x,y)`,
    /// `a notin (x)`, `a` (exists), `!a`, and the integer forms `a>1`, `a<1`;
    /// comma = AND; whitespace tolerant. Err names the problem (e.g. `unable
    /// to parse requirement: ...`, invalid key/value per Kubernetes label
    /// syntax).
    pub fn parse(s: &str) -> Result<Self, String> {
        let tokens = lex(s);
        let mut reqs = Parser {
            toks: &tokens,
            pos: 0,
        }
        .selector()?;
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { reqs })
    }

    /// From a metav1.LabelSelector JSON (`matchLabels`, `matchExpressions`
    /// with In/NotIn/Exists/DoesNotExist). Empty selector matches everything;
    /// so does `null`, which the API would have rejected before storing.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        if v.is_null() {
            return Ok(Self::default());
        }
        let obj = v.as_object().ok_or("label selector must be an object")?;
        let mut reqs = match_labels(obj.get("matchLabels"))?;
        reqs.extend(match_expressions(obj.get("matchExpressions"))?);
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { reqs })
    }

    /// From a typed k8s-openapi `LabelSelector`, with exactly the rules of
    /// [`LabelSelector::from_json`]: the same operators, the same checks of
    /// keys, values and value counts, the same messages.
    pub fn from_typed(s: &TypedLabelSelector) -> Result<Self, String> {
        let labels = s.match_labels.iter().flatten();
        let mut reqs = labels
            .map(|(k, v)| Requirement::new(k, Op::Equals, vec![v.clone()]))
            .collect::<Result<Vec<_>, _>>()?;
        for e in s.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            reqs.push(expression(&e.key, &e.operator, values)?);
        }
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { reqs })
    }

    /// True when the selector has no requirement and so matches everything.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// `labels` is the object's `metadata.labels` (may be None / not an
    /// object → no labels).
    pub fn matches(&self, labels: Option<&Value>) -> bool {
        let labels = labels.and_then(Value::as_object);
        self.matches_with(|key| labels.and_then(|l| l.get(key)).and_then(Value::as_str))
    }

    /// [`LabelSelector::matches`] on typed `metadata.labels` (None → no labels).
    pub fn matches_labels(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        self.matches_with(|key| labels.and_then(|l| l.get(key)).map(String::as_str))
    }

    /// Every requirement holds for the label values `label` looks up.
    fn matches_with<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.reqs.iter().all(|r| r.matches(label(&r.key)))
    }
}

/// Canonical string form as Kubernetes prints it (e.g. `app=web,tier in
/// (a,b)`); used in `Scale.status.selector` and the wide `SELECTOR` columns.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.reqs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.first().map(String::as_str).unwrap_or("");
        let key = &self.key;
        match self.op {
            Op::Exists => write!(f, "{key}"),
            Op::DoesNotExist => write!(f, "!{key}"),
            Op::Equals => write!(f, "{key}={first}"),
            Op::DoubleEquals => write!(f, "{key}=={first}"),
            Op::NotEquals => write!(f, "{key}!={first}"),
            Op::GreaterThan => write!(f, "{key}>{first}"),
            Op::LessThan => write!(f, "{key}<{first}"),
            Op::In => write!(f, "{key} in ({})", self.values.join(",")),
            Op::NotIn => write!(f, "{key} notin ({})", self.values.join(",")),
        }
    }
}

impl Requirement {
    /// Builds a requirement after the checks Kubernetes' NewRequirement makes,
    /// so invalid keys, values and value counts are refused at parse time.
    fn new(key: &str, op: Op, mut values: Vec<String>) -> Result<Self, String> {
        validate_key(key)?;
        check_value_count(op, values.len())?;
        for (i, v) in values.iter().enumerate() {
            validate_value(i, v)?;
        }
        if matches!(op, Op::GreaterThan | Op::LessThan) {
            let v = values.first().map(String::as_str).unwrap_or("");
            if v.parse::<i64>().is_err() {
                return Err(format!(
                    "values[0]: Invalid value: \"{v}\": for 'Gt', 'Lt' operators, the value must be an integer"
                ));
            }
        }
        values.sort();
        values.dedup();
        Ok(Requirement {
            key: key.to_string(),
            op,
            values,
        })
    }

    /// Whether a label value (None = label absent) satisfies this requirement.
    fn matches(&self, value: Option<&str>) -> bool {
        let contains = |v: &str| self.values.iter().any(|x| x == v);
        match (self.op, value) {
            (Op::Exists, v) => v.is_some(),
            (Op::DoesNotExist, v) => v.is_none(),
            (Op::Equals | Op::DoubleEquals | Op::In, Some(v)) => contains(v),
            (Op::NotEquals | Op::NotIn, Some(v)) => !contains(v),
            (Op::NotEquals | Op::NotIn, None) => true,
            (Op::GreaterThan | Op::LessThan, Some(v)) => self.compare_int(v),
            (_, None) => false,
        }
    }

    /// Gt/Lt compare integers; a non-integer label never matches.
    fn compare_int(&self, label: &str) -> bool {
        let want = self.values.first().and_then(|v| v.parse::<i64>().ok());
        match (label.parse::<i64>(), want) {
            (Ok(have), Some(want)) if self.op == Op::GreaterThan => have > want,
            (Ok(have), Some(want)) => have < want,
            _ => false,
        }
    }
}

/// Kubernetes requires exactly one value for the comparison operators, at
/// least one for set operators and none for existence tests.
fn check_value_count(op: Op, n: usize) -> Result<(), String> {
    match op {
        Op::In | Op::NotIn if n == 0 => Err(
            "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty"
                .into(),
        ),
        Op::Equals | Op::DoubleEquals | Op::NotEquals if n != 1 => {
            Err("values: Invalid value: exact-match compatibility requires one single value".into())
        }
        Op::GreaterThan | Op::LessThan if n != 1 => Err(
            "values: Invalid value: for 'Gt', 'Lt' operators, exactly one value is required".into(),
        ),
        Op::Exists | Op::DoesNotExist if n != 0 => Err(
            "values: Invalid value: values set must be empty for exists and does not exist".into(),
        ),
        _ => Ok(()),
    }
}

/// `matchLabels`: every entry is an equality requirement.
fn match_labels(v: Option<&Value>) -> Result<Vec<Requirement>, String> {
    let Some(map) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let map = map.as_object().ok_or("matchLabels must be an object")?;
    map.iter()
        .map(|(k, v)| {
            let v = v
                .as_str()
                .ok_or_else(|| format!("matchLabels[{k}] must be a string"))?;
            Requirement::new(k, Op::Equals, vec![v.to_string()])
        })
        .collect()
}

/// `matchExpressions`: `{key, operator, values}` with the four operators a
/// metav1.LabelSelector allows.
fn match_expressions(v: Option<&Value>) -> Result<Vec<Requirement>, String> {
    let Some(list) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let list = list.as_array().ok_or("matchExpressions must be a list")?;
    list.iter().map(match_expression).collect()
}

fn match_expression(e: &Value) -> Result<Requirement, String> {
    let key = e.get("key").and_then(Value::as_str).unwrap_or("");
    let op_name = e.get("operator").and_then(Value::as_str).unwrap_or("");
    let values = match e.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or("values must be strings")
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("matchExpressions values must be a list".into()),
    };
    expression(key, op_name, values)
}

/// One `matchExpressions` entry, whichever form it came in.
fn expression(key: &str, operator: &str, values: Vec<String>) -> Result<Requirement, String> {
    let op = match operator {
        "In" => Op::In,
        "NotIn" => Op::NotIn,
        "Exists" => Op::Exists,
        "DoesNotExist" => Op::DoesNotExist,
        other => {
            return Err(format!(
                "\"{other}\" is not a valid label selector operator"
            ))
        }
    };
    Requirement::new(key, op, values)
}

// ----- key and value syntax -------------------------------------------------

const NAME_RULE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// A label key is a qualified name: `[prefix/]name`, prefix a DNS-1123
/// subdomain, name at most 63 characters of `[A-Za-z0-9_.-]` with
/// alphanumeric ends.
fn validate_key(key: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("key: Invalid value: \"{key}\": {why}"));
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if name.contains('/') {
        return bad("a qualified name must consist of alphanumeric characters, '-', '_' or '.', with an optional DNS subdomain prefix and '/'");
    }
    if let Some(p) = prefix {
        if p.is_empty() {
            return bad("prefix part must be non-empty");
        }
        if p.len() > MAX_PREFIX_LEN || !is_dns_subdomain(p) {
            return bad("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character");
        }
    }
    if name.is_empty() {
        return bad("name part must be non-empty");
    }
    if name.len() > MAX_LABEL_LEN {
        return bad("name part must be no more than 63 characters");
    }
    if !is_label_token(name) {
        return bad(&format!("name part {NAME_RULE}"));
    }
    Ok(())
}

/// A label value is empty or follows the same rule as a key's name part.
fn validate_value(i: usize, v: &str) -> Result<(), String> {
    if v.len() > MAX_LABEL_LEN {
        return Err(format!(
            "values[{i}]: Invalid value: \"{v}\": must be no more than 63 characters"
        ));
    }
    if !v.is_empty() && !is_label_token(v) {
        return Err(format!(
            "values[{i}]: Invalid value: \"{v}\": a valid label must be an empty string or {NAME_RULE}"
        ));
    }
    Ok(())
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_label_token(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric() && l.is_ascii_alphanumeric() && b.iter().all(inner)
        }
        _ => false,
    }
}

/// Lowercase RFC 1123 subdomain: dot-separated labels of `[a-z0-9-]` with
/// alphanumeric ends.
fn is_dns_subdomain(s: &str) -> bool {
    s.split('.').all(|label| {
        let b = label.as_bytes();
        let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        match (b.first(), b.last()) {
            (Some(f), Some(l)) => ok(f) && ok(l) && b.iter().all(|c| ok(c) || *c == b'-'),
            _ => false,
        }
    })
}

// ----- lexer and parser -------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    In,
    NotIn,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
    End,
}

impl Tok {
    /// The token as Kubernetes quotes it in "found '…'" messages.
    fn text(&self) -> &str {
        match self {
            Tok::Ident(s) => s,
            Tok::Bang => "!",
            Tok::Eq => "=",
            Tok::DoubleEq => "==",
            Tok::NotEq => "!=",
            Tok::In => "in",
            Tok::NotIn => "notin",
            Tok::Gt => ">",
            Tok::Lt => "<",
            Tok::Open => "(",
            Tok::Close => ")",
            Tok::Comma => ",",
            Tok::End => "",
        }
    }
}

/// Characters that end an identifier, as in Kubernetes' selector lexer.
fn is_special(c: char) -> bool {
    c.is_whitespace() || "!=,()<>".contains(c)
}

/// Splits the selector into tokens; `in`/`notin` are keywords only where a
/// key or operator is expected (the parser turns them back into identifiers
/// in value position, as Kubernetes does).
fn lex(s: &str) -> Vec<Tok> {
    let mut toks = Vec::new();
    let mut rest = s.trim_start();
    while let Some(c) = rest.chars().next() {
        let (tok, len) = match c {
            '!' if rest.starts_with("!=") => (Tok::NotEq, 2),
            '!' => (Tok::Bang, 1),
            '=' if rest.starts_with("==") => (Tok::DoubleEq, 2),
            '=' => (Tok::Eq, 1),
            '>' => (Tok::Gt, 1),
            '<' => (Tok::Lt, 1),
            '(' => (Tok::Open, 1),
            ')' => (Tok::Close, 1),
            ',' => (Tok::Comma, 1),
            _ => {
                let len = rest.find(is_special).unwrap_or(rest.len());
                (word(&rest[..len]), len)
            }
        };
        toks.push(tok);
        rest = rest[len..].trim_start();
    }
    toks.push(Tok::End);
    toks
}

fn word(w: &str) -> Tok {
    match w {
        "in" => Tok::In,
        "notin" => Tok::NotIn,
        _ => Tok::Ident(w.to_string()),
    }
}

struct Parser<'a> {
    toks: &'a [Tok],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).unwrap_or(&Tok::End)
    }

    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        self.pos += 1;
        t
    }

    /// In value position the keywords are plain words (`a=in` is valid).
    fn next_value(&mut self) -> Tok {
        match self.next() {
            Tok::In => Tok::Ident("in".into()),
            Tok::NotIn => Tok::Ident("notin".into()),
            t => t,
        }
    }

    /// `Requirement ("," Requirement)*`, or nothing at all.
    fn selector(&mut self) -> Result<Vec<Requirement>, String> {
        let mut reqs = Vec::new();
        if *self.peek() == Tok::End {
            return Ok(reqs);
        }
        loop {
            match self.peek() {
                Tok::Ident(_) | Tok::Bang => {}
                t => {
                    return Err(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        t.text()
                    ))
                }
            }
            let r = self
                .requirement()
                .map_err(|e| format!("unable to parse requirement: {e}"))?;
            reqs.push(r);
            match self.next() {
                Tok::End => return Ok(reqs),
                Tok::Comma => self.after_comma()?,
                t => {
                    return Err(format!(
                        "found '{}', expected: ',' or 'end of string'",
                        t.text()
                    ))
                }
            }
        }
    }

    fn after_comma(&self) -> Result<(), String> {
        match self.peek() {
            Tok::Ident(_) | Tok::Bang => Ok(()),
            t => Err(format!(
                "found '{}', expected: identifier after ','",
                t.text()
            )),
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        if *self.peek() == Tok::Bang {
            self.pos += 1;
            let key = self.key()?;
            return match self.peek() {
                Tok::End | Tok::Comma => Requirement::new(&key, Op::DoesNotExist, Vec::new()),
                t => Err(format!(
                    "found '{}', expected: ',' or 'end of string'",
                    t.text()
                )),
            };
        }
        let key = self.key()?;
        let op = match self.peek() {
            Tok::End | Tok::Comma => return Requirement::new(&key, Op::Exists, Vec::new()),
            _ => self.operator()?,
        };
        let values = match op {
            Op::In | Op::NotIn => self.value_set()?,
            _ => vec![self.exact_value()?],
        };
        Requirement::new(&key, op, values)
    }

    fn key(&mut self) -> Result<String, String> {
        match self.next() {
            Tok::Ident(k) => Ok(k),
            t => Err(format!("found '{}', expected: identifier", t.text())),
        }
    }

    fn operator(&mut self) -> Result<Op, String> {
        Ok(match self.next() {
            Tok::Eq => Op::Equals,
            Tok::DoubleEq => Op::DoubleEquals,
            Tok::NotEq => Op::NotEquals,
            Tok::In => Op::In,
            Tok::NotIn => Op::NotIn,
            Tok::Gt => Op::GreaterThan,
            Tok::Lt => Op::LessThan,
            t => {
                return Err(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    t.text()
                ))
            }
        })
    }

    /// The single value after `=`, `==`, `!=`, `>`, `<`; empty when the term
    /// ends right after the operator (`a=` selects an empty label value).
    fn exact_value(&mut self) -> Result<String, String> {
        if matches!(self.peek(), Tok::End | Tok::Comma) {
            return Ok(String::new());
        }
        match self.next_value() {
            Tok::Ident(v) => Ok(v),
            t => Err(format!(
                "found '{}', expected: identifier for value",
                t.text()
            )),
        }
    }

    /// `"(" [value] ("," [value])* ")"`; an empty slot is the empty value.
    fn value_set(&mut self) -> Result<Vec<String>, String> {
        match self.next() {
            Tok::Open => {}
            t => return Err(format!("found '{}', expected: '('", t.text())),
        }
        if *self.peek() == Tok::Close {
            self.pos += 1;
            return Ok(Vec::new());
        }
        let mut values = Vec::new();
        loop {
            let v = match self.peek() {
                Tok::Comma | Tok::Close => String::new(),
                _ => match self.next_value() {
                    Tok::Ident(v) => v,
                    t => {
                        return Err(format!(
                            "found '{}', expected: ',', ')' or identifier",
                            t.text()
                        ))
                    }
                },
            };
            values.push(v);
            match self.next() {
                Tok::Comma => {}
                Tok::Close => return Ok(values),
                t => return Err(format!("found '{}', expected: ',' or ')'", t.text())),
            }
        }
    }
}

// ----- field selectors --------------------------------------------------------

/// Field selector comparison. `==` is kept apart from `=` only so that the
/// term is faithful to what was sent; both test equality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldOp {
    Equals,
    DoubleEquals,
    NotEquals,
}

#[derive(Debug, Clone, PartialEq)]
struct FieldTerm {
    field: String,
    op: FieldOp,
    value: String,
}

/// A parsed field selector: the AND of `field op value` terms, each field
/// checked against what the real API server supports for the resource.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

/// How a missing field reads: typed fields print their Go zero value the way
/// the real server's field sets do (`false`, `0`), strings read as empty.
#[derive(Clone, Copy)]
enum Zero {
    Str,
    Bool,
    Int,
}

/// Field labels every resource supports.
const COMMON_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

/// Per-resource field labels, as the real API server's field-label
/// conversion functions allow them.
fn resource_fields(resource: &str) -> &'static [&'static str] {
    match resource {
        "pods" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "events" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "secrets" => &["type"],
        "nodes" => &["spec.unschedulable"],
        "namespaces" => &["status.phase"],
        "replicasets" | "replicationcontrollers" => &["status.replicas"],
        "jobs" => &["status.successful"],
        _ => &[],
    }
}

/// Where a field label lives in the JSON object and how its absence reads.
/// Most labels are their own JSON path; a few are renamed by the server.
fn field_path(field: &str) -> (&str, Zero) {
    match field {
        "source" => ("source.component", Zero::Str),
        "reportingComponent" => ("reportingController", Zero::Str),
        "status.successful" => ("status.succeeded", Zero::Int),
        "status.replicas" => ("status.replicas", Zero::Int),
        "spec.hostNetwork" | "spec.unschedulable" => (field, Zero::Bool),
        _ => (field, Zero::Str),
    }
}

/// Reads a field label's value from an object as the server's field set
/// would present it (strings as-is, booleans and numbers in decimal).
fn field_value(obj: &Value, field: &str) -> String {
    let (path, zero) = field_path(field);
    let v = path.split('.').try_fold(obj, |v, seg| v.get(seg));
    match (v, zero) {
        (Some(Value::String(s)), _) => s.clone(),
        (Some(Value::Bool(b)), _) => b.to_string(),
        (Some(Value::Number(n)), _) => n.to_string(),
        (_, Zero::Str) => String::new(),
        (_, Zero::Bool) => "false".into(),
        (_, Zero::Int) => "0".into(),
    }
}

impl FieldSelector {
    /// `resource` is the plural resource name. Terms joined by `,` (a `\,`
    /// inside a value is a literal comma; `\=` and `\\` likewise); operators
    /// `=`, `==`, `!=`. Fields supported everywhere: metadata.name,
    /// metadata.namespace; plus the per-resource fields of the real API
    /// server. Anything else → `Err("field label not supported: {field}")`.
    pub fn parse(resource: &str, s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in split_terms(s) {
            if part.trim().is_empty() {
                continue;
            }
            let (lhs, op, rhs) = split_term(part)
                .ok_or_else(|| format!("invalid selector: '{s}'; can't understand '{part}'"))?;
            let field = lhs.trim();
            if !COMMON_FIELDS.contains(&field) && !resource_fields(resource).contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push(FieldTerm {
                field: field.to_string(),
                op,
                value: unescape(rhs.trim())?,
            });
        }
        Ok(FieldSelector { terms })
    }

    /// True when the selector has no term and so matches everything.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// A missing field compares as its zero value (`""` for strings), so
    /// `status.phase!=Failed` matches a pod with no phase yet.
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|t| {
            let have = field_value(obj, &t.field);
            match t.op {
                FieldOp::Equals | FieldOp::DoubleEquals => have == t.value,
                FieldOp::NotEquals => have != t.value,
            }
        })
    }

    /// The value of `metadata.name` if the selector pins it with `=`/`==`
    /// (lets the server narrow a list to one key).
    pub fn pinned_name(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == "metadata.name" && t.op != FieldOp::NotEquals)
            .map(|t| t.value.as_str())
    }
}

/// Splits on commas that are not escaped with a backslash.
fn split_terms(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Finds the first operator in the term; at one position `!=` and `==` win
/// over `=`, as in Kubernetes.
fn split_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    const OPS: [(&str, FieldOp); 3] = [
        ("!=", FieldOp::NotEquals),
        ("==", FieldOp::DoubleEquals),
        ("=", FieldOp::Equals),
    ];
    term.char_indices().find_map(|(i, _)| {
        let rest = &term[i..];
        OPS.iter()
            .find(|(op, _)| rest.starts_with(op))
            .map(|(op, kind)| (&term[..i], *kind, &rest[op.len()..]))
    })
}

/// Undoes kubectl's field value escaping (`\\`, `\,`, `\=`).
fn unescape(v: &str) -> Result<String, String> {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(e @ ('\\' | ',' | '=')) => out.push(e),
            _ => {
                return Err(format!(
                    "invalid field selector value: invalid escape sequence in '{v}'"
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Option<Value> {
        Some(v)
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn equality_operators() {
        let l = labels(json!({"app": "web", "tier": "fe"}));
        assert!(sel("app=web").matches(l.as_ref()));
        assert!(sel("app==web").matches(l.as_ref()));
        assert!(!sel("app=db").matches(l.as_ref()));
        assert!(sel("app!=db").matches(l.as_ref()));
        assert!(!sel("app!=web").matches(l.as_ref()));
        assert!(sel("missing!=x").matches(l.as_ref()));
        assert!(!sel("missing=x").matches(l.as_ref()));
    }

    #[test]
    fn set_and_existence_operators() {
        let l = labels(json!({"app": "web", "tier": "fe"}));
        assert!(sel("tier in (fe,be)").matches(l.as_ref()));
        assert!(!sel("tier in (be)").matches(l.as_ref()));
        assert!(sel("tier notin (be)").matches(l.as_ref()));
        assert!(!sel("tier notin (fe)").matches(l.as_ref()));
        assert!(sel("missing notin (fe)").matches(l.as_ref()));
        assert!(!sel("missing in (fe)").matches(l.as_ref()));
        assert!(sel("app").matches(l.as_ref()));
        assert!(!sel("!app").matches(l.as_ref()));
        assert!(sel("!missing").matches(l.as_ref()));
        assert!(!sel("missing").matches(l.as_ref()));
    }

    #[test]
    fn integer_operators() {
        let l = labels(json!({"n": "5", "s": "x"}));
        assert!(sel("n>4").matches(l.as_ref()));
        assert!(!sel("n>5").matches(l.as_ref()));
        assert!(sel("n<6").matches(l.as_ref()));
        assert!(!sel("s<6").matches(l.as_ref()));
        assert!(LabelSelector::parse("n>x").is_err());
    }

    #[test]
    fn comma_is_and_and_whitespace_is_tolerated() {
        let l = labels(json!({"app": "web", "tier": "fe"}));
        assert!(sel(" app = web , tier in ( fe , be ) ").matches(l.as_ref()));
        assert!(!sel("app=web,tier=be").matches(l.as_ref()));
        assert!(sel("kubernetes.io/cluster-service=true")
            .matches(labels(json!({"kubernetes.io/cluster-service": "true"})).as_ref()));
    }

    #[test]
    fn no_labels_and_empty_selector() {
        assert!(sel("").matches(None));
        assert!(sel("   ").is_empty());
        assert!(sel("!a").matches(None));
        assert!(sel("a!=b").matches(Some(&json!("not an object"))));
        assert!(!sel("a").matches(None));
        assert!(LabelSelector::default().matches(Some(&json!({"x": "y"}))));
    }

    #[test]
    fn empty_values() {
        let l = labels(json!({"a": ""}));
        assert!(sel("a=").matches(l.as_ref()));
        assert!(sel("a in (,x)").matches(l.as_ref()));
        assert_eq!(sel("a in (x,)").to_string(), "a in (,x)");
        assert!(sel("a=in").matches(labels(json!({"a": "in"})).as_ref()));
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        let s = sel("tier in (b,a,a),app=web,!gone,has,x!=y,z==q,n>3");
        let text = s.to_string();
        // Sorted by key, as Kubernetes does, not by printed form.
        assert_eq!(text, "app=web,!gone,has,n>3,tier in (a,b),x!=y,z==q");
        assert_eq!(sel(&text), s);
        assert_eq!(sel("a notin (y,x)").to_string(), "a notin (x,y)");
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "a in x", "a in (x", "a=(b)", "a,", ",a", "a b", "!a=b", "in=b", "(a)", "a in ()",
            "=b", "a=b=c",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should fail");
        }
        // An operator followed by nothing selects the empty value.
        assert!(LabelSelector::parse("a==").is_ok());
        let e = LabelSelector::parse("a in ()").unwrap_err();
        assert!(e.starts_with("unable to parse requirement: "), "{e}");
    }

    #[test]
    fn invalid_keys_and_values() {
        let e = LabelSelector::parse("-a=b").unwrap_err();
        assert!(
            e.contains("unable to parse requirement") && e.contains("name part"),
            "{e}"
        );
        let e = LabelSelector::parse("a=-b").unwrap_err();
        assert!(e.contains("a valid label must be an empty string"), "{e}");
        assert!(LabelSelector::parse(&format!("a={}", "x".repeat(64))).is_err());
        assert!(LabelSelector::parse(&format!("{}=b", "x".repeat(64))).is_err());
        assert!(LabelSelector::parse("Example.com/a=b").is_err());
        assert!(LabelSelector::parse("/a=b").is_err());
        assert!(LabelSelector::parse("a/b/c=d").is_err());
        assert!(LabelSelector::parse("example.com/a_b.c=D-1").is_ok());
    }

    #[test]
    fn from_json_selector() {
        let s = LabelSelector::from_json(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "gone", "operator": "DoesNotExist"},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
                {"key": "has", "operator": "Exists"}
            ]
        }))
        .unwrap();
        assert_eq!(
            s.to_string(),
            "app=web,env notin (prod),!gone,has,tier in (a,b)"
        );
        assert!(s.matches(Some(&json!({"app": "web", "tier": "a", "has": ""}))));
        assert!(!s.matches(Some(&json!({"app": "web", "tier": "a"}))));
        assert!(LabelSelector::from_json(&json!({})).unwrap().is_empty());
        assert!(LabelSelector::from_json(&Value::Null).unwrap().is_empty());
    }

    #[test]
    fn from_json_errors() {
        let bad = [
            json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
            json!({"matchLabels": {"a": 1}}),
            json!({"matchLabels": {"-a": "b"}}),
            json!("app=web"),
        ];
        for b in bad {
            assert!(LabelSelector::from_json(&b).is_err(), "{b}");
        }
    }

    fn typed(v: Value) -> Result<LabelSelector, String> {
        let t: TypedLabelSelector = serde_json::from_value(v.clone()).expect("a typed selector");
        let from_typed = LabelSelector::from_typed(&t);
        assert_eq!(from_typed, LabelSelector::from_json(&v), "{v}");
        from_typed
    }

    fn label_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn from_typed_selector_agrees_with_from_json() {
        let s = typed(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "gone", "operator": "DoesNotExist"},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
                {"key": "has", "operator": "Exists"}
            ]
        }))
        .unwrap();
        assert_eq!(
            s.to_string(),
            "app=web,env notin (prod),!gone,has,tier in (a,b)"
        );
        let good = label_map(&[("app", "web"), ("tier", "a"), ("has", "")]);
        assert!(s.matches_labels(Some(&good)));
        assert!(!s.matches_labels(Some(&label_map(&[("app", "web"), ("tier", "a")]))));
        assert!(!s.matches_labels(None));
        assert!(typed(json!({})).unwrap().is_empty());
        assert!(LabelSelector::default().matches_labels(None));
    }

    #[test]
    fn from_typed_errors_like_from_json() {
        let bad = [
            json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
            json!({"matchLabels": {"-a": "b"}}),
            json!({"matchLabels": {"a": "-b"}}),
        ];
        for b in bad {
            assert!(typed(b.clone()).is_err(), "{b}");
        }
    }

    fn pod() -> Value {
        json!({
            "metadata": {"name": "x", "namespace": "default"},
            "spec": {"nodeName": "n1", "restartPolicy": "Always"},
            "status": {"phase": "Running", "podIP": "10.0.0.1"}
        })
    }

    #[test]
    fn describe_node_pod_selector() {
        let s = FieldSelector::parse(
            "pods",
            "spec.nodeName=n1,status.phase!=Succeeded,status.phase!=Failed",
        )
        .unwrap();
        assert!(s.matches(&pod()));
        let mut done = pod();
        done["status"]["phase"] = json!("Succeeded");
        assert!(!s.matches(&done));
        let mut other = pod();
        other["spec"]["nodeName"] = json!("n2");
        assert!(!s.matches(&other));
        let no_phase = json!({"metadata": {"name": "y"}, "spec": {"nodeName": "n1"}});
        assert!(s.matches(&no_phase));
    }

    #[test]
    fn describe_events_selector() {
        let s = FieldSelector::parse(
            "events",
            "involvedObject.name=x,involvedObject.namespace=default,involvedObject.uid=5cbe-1",
        )
        .unwrap();
        let ev = json!({"involvedObject": {"name": "x", "namespace": "default", "uid": "5cbe-1", "kind": "Pod"}});
        assert!(s.matches(&ev));
        let mut other = ev.clone();
        other["involvedObject"]["uid"] = json!("zzz");
        assert!(!s.matches(&other));
        let s = FieldSelector::parse(
            "events",
            "source=kubelet,reportingComponent=sched,type==Normal",
        )
        .unwrap();
        let ev = json!({"source": {"component": "kubelet"}, "reportingController": "sched", "type": "Normal"});
        assert!(s.matches(&ev));
    }

    #[test]
    fn field_operators_and_pinned_name() {
        let s = FieldSelector::parse("pods", "metadata.name=x").unwrap();
        assert_eq!(s.pinned_name(), Some("x"));
        assert!(s.matches(&pod()));
        let s =
            FieldSelector::parse("pods", "metadata.name==x,metadata.namespace=default").unwrap();
        assert_eq!(s.pinned_name(), Some("x"));
        assert!(s.matches(&pod()));
        let s = FieldSelector::parse("pods", "metadata.name!=x").unwrap();
        assert_eq!(s.pinned_name(), None);
        assert!(!s.matches(&pod()));
        assert!(FieldSelector::parse("pods", "").unwrap().is_empty());
        assert!(FieldSelector::parse("pods", "")
            .unwrap()
            .matches(&json!(null)));
    }

    #[test]
    fn typed_fields_read_as_the_server_formats_them() {
        let s = FieldSelector::parse("pods", "spec.hostNetwork=false").unwrap();
        assert!(s.matches(&pod()));
        let s = FieldSelector::parse("nodes", "spec.unschedulable=true").unwrap();
        assert!(s.matches(&json!({"spec": {"unschedulable": true}})));
        let s = FieldSelector::parse("jobs", "status.successful=0").unwrap();
        assert!(s.matches(&json!({})));
        assert!(!s.matches(&json!({"status": {"succeeded": 2}})));
        let s = FieldSelector::parse("replicasets", "status.replicas!=0").unwrap();
        assert!(s.matches(&json!({"status": {"replicas": 3}})));
        let s = FieldSelector::parse("secrets", "type=Opaque").unwrap();
        assert!(s.matches(&json!({"type": "Opaque"})));
    }

    #[test]
    fn unsupported_fields_and_bad_syntax() {
        assert_eq!(
            FieldSelector::parse("deployments", "spec.nodeName=n1").unwrap_err(),
            "field label not supported: spec.nodeName"
        );
        assert_eq!(
            FieldSelector::parse("pods", "status.phase=Running,spec.foo=x").unwrap_err(),
            "field label not supported: spec.foo"
        );
        assert!(FieldSelector::parse("pods", "metadata.name")
            .unwrap_err()
            .contains("can't understand 'metadata.name'"));
        assert!(FieldSelector::parse("pods", "metadata.name=a\\b").is_err());
        assert!(FieldSelector::parse("pods", "metadata.name=a\\").is_err());
    }

    #[test]
    fn escaped_values() {
        let s = FieldSelector::parse("configmaps", "metadata.name=a\\,b\\=c").unwrap();
        assert_eq!(s.pinned_name(), Some("a,b=c"));
        assert!(s.matches(&json!({"metadata": {"name": "a,b=c"}})));
    }
}
