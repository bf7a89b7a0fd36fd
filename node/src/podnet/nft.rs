//! nftables tables keel owns, built as typed JSON (the `nftables` crate's
//! schema) and applied with `nft -j -f -`.
//!
//! Why nft's JSON API: nftables has no netlink crate as maintained as the
//! `nft` tool itself, and nft's JSON input is its documented
//! machine interface: every value is a typed field, so nothing is quoted
//! or escaped by hand, and a batch given to `nft -j -f -` is applied as
//! **one transaction**: either every command takes effect or none does.
//! Each table keel owns is replaced whole by [`TableBatch::replace`]'s
//! add-delete-add sequence, so a reconcile never leaves half a table and
//! never touches any other table of the namespace. Users still read the
//! rules as text (`nft list table ip keel`): the kernel keeps rules, not
//! the syntax they came in.
//!
//! The price is speed: nft parses JSON (libjansson) more slowly than its
//! own syntax, and the JSON is about 4× larger. Replacing a 1,000-Service
//! table took nft 1.0.6 a median 678 ms as JSON against 470 ms as text
//! (same rules, interleaved runs on a loaded machine); the kernel part is
//! the same.
//!
//! Every value written into a batch comes from a parsed type (an
//! [`Ipv4Addr`], an [`Ipv4Net`], a port number, an index), never from API
//! text.
//!
//! nft 1.0.6 (Debian 12) refuses the set flag `dynamic` in JSON ("Invalid
//! set flag"), which the crate's schema offers: [`TableBatch::timed_addr_set`]
//! leaves it out, and nft adds it itself to a set that an `update`
//! statement of the same batch names (`nft list` shows `flags
//! dynamic,timeout`).

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};
use ipnet::Ipv4Net;
use nftables::expr::{
    Expression, MetaKey, NamedExpression, Payload, PayloadField, SetItem, Verdict,
};
use nftables::schema::{Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Set, SetFlag};
use nftables::schema::{SetType, SetTypeValue, Table};
use nftables::stmt::{JumpTarget, Match, Operator, Statement, VerdictMap};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

/// The nftables CLI, found on `PATH`.
pub const NFT: &str = "nft";

/// A statement, owning its values.
pub type Stmt = Statement<'static>;
/// An expression, owning its values.
pub type Expr = Expression<'static>;

/// The contents of one table keel owns, collected in any order and
/// emitted as the batch that replaces the table whole.
pub struct TableBatch {
    family: NfFamily,
    name: &'static str,
    sets: Vec<NfListObject<'static>>,
    chains: Vec<NfListObject<'static>>,
    rules: Vec<NfListObject<'static>>,
}

impl TableBatch {
    /// An empty table `family name`.
    pub fn new(family: NfFamily, name: &'static str) -> TableBatch {
        TableBatch {
            family,
            name,
            sets: Vec::new(),
            chains: Vec::new(),
            rules: Vec::new(),
        }
    }

    fn table(&self) -> NfListObject<'static> {
        NfListObject::Table(Table {
            family: self.family,
            name: self.name.into(),
            handle: None,
        })
    }

    fn chain_object(&self, name: String) -> Chain<'static> {
        Chain {
            family: self.family,
            table: self.name.into(),
            name: name.into(),
            ..Chain::default()
        }
    }

    /// A regular chain (reached by jump, goto or a verdict map).
    pub fn chain(&mut self, name: impl Into<String>) {
        let chain = self.chain_object(name.into());
        self.chains.push(NfListObject::Chain(chain));
    }

    /// A base chain of `kind` on `hook` at `priority`, policy accept.
    pub fn base_chain(
        &mut self,
        name: impl Into<String>,
        kind: NfChainType,
        hook: NfHook,
        priority: i32,
    ) {
        let chain = Chain {
            _type: Some(kind),
            hook: Some(hook),
            prio: Some(priority),
            policy: Some(NfChainPolicy::Accept),
            ..self.chain_object(name.into())
        };
        self.chains.push(NfListObject::Chain(chain));
    }

    /// A set of IPv4 addresses whose elements expire `timeout_s` after
    /// their last `update` (see the module docs on the `dynamic` flag).
    pub fn timed_addr_set(&mut self, name: impl Into<String>, timeout_s: u32) {
        let set = Set {
            family: self.family,
            table: self.name.into(),
            name: name.into().into(),
            set_type: SetTypeValue::Single(SetType::Ipv4Addr),
            flags: Some(HashSet::from([SetFlag::Timeout])),
            timeout: Some(timeout_s),
            ..Set::default()
        };
        self.sets.push(NfListObject::Set(Box::new(set)));
    }

    /// Appends a rule of `statements` to `chain` (rules of one chain keep
    /// the order of the calls).
    pub fn rule(&mut self, chain: impl Into<String>, statements: Vec<Stmt>) {
        self.rules.push(NfListObject::Rule(Rule {
            family: self.family,
            table: self.name.into(),
            chain: chain.into().into(),
            expr: statements.into(),
            ..Rule::default()
        }));
    }

    /// The batch replacing the table with this content: add (so that the
    /// delete is valid when the table does not exist yet), delete, add,
    /// then sets, chains and rules, each before what names it.
    pub fn replace(self) -> Nftables<'static> {
        let table = self.table();
        let objects = [
            NfCmd::Add(table.clone()),
            NfCmd::Delete(table.clone()),
            NfCmd::Add(table),
        ]
        .into_iter()
        .chain(
            [self.sets, self.chains, self.rules]
                .into_iter()
                .flatten()
                .map(NfCmd::Add),
        )
        .map(NfObject::CmdObject)
        .collect::<Vec<_>>();
        Nftables {
            objects: objects.into(),
        }
    }
}

/// A packet header field, e.g. `payload("ip", "saddr")`, `payload("th", "dport")`.
pub fn payload(protocol: &'static str, field: &'static str) -> Expr {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

/// Packet metadata, e.g. `meta mark`.
pub fn meta(key: MetaKey) -> Expr {
    Expression::Named(NamedExpression::Meta(nftables::expr::Meta { key }))
}

/// The match `left op right`.
pub fn matches(left: Expr, op: Operator, right: Expr) -> Stmt {
    Statement::Match(Match { left, right, op })
}

/// The match `left == right`.
pub fn is(left: Expr, right: Expr) -> Stmt {
    matches(left, Operator::EQ, right)
}

/// An IPv4 address value.
pub fn addr(ip: Ipv4Addr) -> Expr {
    Expression::String(ip.to_string().into())
}

/// An IPv4 network value (`a.b.c.d/len`).
pub fn net(net: Ipv4Net) -> Expr {
    Expression::Named(NamedExpression::Prefix(nftables::expr::Prefix {
        addr: Box::new(addr(net.network())),
        len: u32::from(net.prefix_len()),
    }))
}

/// A number value (ports, marks, indexes).
pub fn number(n: impl Into<u32>) -> Expr {
    Expression::Number(n.into())
}

/// An anonymous set `{ a, b, ... }`.
pub fn anonymous_set(items: impl IntoIterator<Item = Expr>) -> Expr {
    Expression::Named(NamedExpression::Set(
        items.into_iter().map(SetItem::Element).collect(),
    ))
}

/// A reference to the named set `@name`.
pub fn set_ref(name: &str) -> Expr {
    Expression::String(format!("@{name}").into())
}

/// `update @<set> { <elem> }`: adds `elem` to the set, or renews its
/// timeout.
pub fn update_set(elem: Expr, set: &str) -> Stmt {
    Statement::Set(nftables::stmt::Set {
        op: nftables::stmt::SetOp::Update,
        elem,
        set: format!("@{set}").into(),
    })
}

/// `meta l4proto <protocol>`, then `th dport <first>[-<last>]` for
/// `ports`: nft needs the protocol in any rule that matches a port.
pub fn l4_ports(protocol: &'static str, ports: Option<(u16, u16)>) -> Vec<Stmt> {
    let mut out = vec![is(
        meta(MetaKey::L4proto),
        Expression::String(protocol.into()),
    )];
    if let Some((first, last)) = ports {
        let port = if first == last {
            number(first)
        } else {
            Expression::Range(Box::new(nftables::expr::Range {
                range: [number(first), number(last)],
            }))
        };
        out.push(is(payload("th", "dport"), port));
    }
    out
}

/// `jump <chain>` as a verdict (for verdict maps).
pub fn jump(chain: impl Into<String>) -> Verdict<'static> {
    Verdict::Jump(JumpTarget {
        target: chain.into().into(),
    })
}

/// `goto <chain>` as a verdict (for verdict maps).
pub fn goto(chain: impl Into<String>) -> Verdict<'static> {
    Verdict::Goto(JumpTarget {
        target: chain.into().into(),
    })
}

/// `goto <chain>` as a statement.
pub fn goto_stmt(chain: impl Into<String>) -> Stmt {
    Statement::Goto(JumpTarget {
        target: chain.into().into(),
    })
}

/// `jump <chain>` as a statement.
pub fn jump_stmt(chain: impl Into<String>) -> Stmt {
    Statement::Jump(JumpTarget {
        target: chain.into().into(),
    })
}

/// `<key> vmap { k1 : v1, ... }`.
pub fn verdict_map(key: Expr, arms: impl IntoIterator<Item = (Expr, Verdict<'static>)>) -> Stmt {
    let items = arms
        .into_iter()
        .map(|(k, v)| SetItem::Mapping(k, Expression::Verdict(v)))
        .collect();
    Statement::VerdictMap(VerdictMap {
        key,
        data: Expression::Named(NamedExpression::Set(items)),
    })
}

/// Applies `batch` with `nft -j -f -` in the caller's network namespace
/// (our own spawn rather than the crate's helper, for the two errors
/// below).
///
/// Errors: nft is missing (the message says to install `nftables`), or it
/// refused the batch (its stderr, naming the command index it failed at).
pub fn apply(batch: &Nftables<'_>) -> anyhow::Result<()> {
    let json = serde_json::to_vec(batch).context("encode the nftables batch")?;
    let mut child = Command::new(NFT)
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {NFT} (install the nftables package)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&json).context("write the nft batch")?;
    }
    let out = child.wait_with_output().context("wait for nft")?;
    if !out.status.success() {
        bail!(
            "nft refused the ruleset: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Deletes table `family name` if it exists (agent cleanup, tests).
pub fn delete_table(family: NfFamily, name: &'static str) -> anyhow::Result<()> {
    let table = TableBatch::new(family, name).table();
    let objects = [NfCmd::Add(table.clone()), NfCmd::Delete(table)]
        .into_iter()
        .map(NfObject::CmdObject)
        .collect::<Vec<_>>();
    apply(&Nftables {
        objects: Cow::Owned(objects),
    })
}

/// Whether `nft` can run here (for error messages at start).
pub fn available() -> bool {
    Command::new(NFT)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Test helpers: the JSON of a batch, by chain.
#[cfg(test)]
pub(crate) mod render {
    use super::Nftables;
    use serde_json::Value;

    /// The batch as nft reads it.
    pub fn json(batch: &Nftables<'_>) -> Value {
        serde_json::to_value(batch).unwrap()
    }

    /// The `add` commands of the batch for objects of `kind` ("set", "chain", "rule").
    pub fn added(batch: &Nftables<'_>, kind: &str) -> Vec<Value> {
        let json = json(batch);
        json["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o.get("add")?.get(kind).cloned())
            .collect()
    }

    /// The statements of each rule of `chain`, in order.
    pub fn rules(batch: &Nftables<'_>, chain: &str) -> Vec<Value> {
        added(batch, "rule")
            .into_iter()
            .filter(|r| r["chain"] == chain)
            .map(|r| r["expr"].clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_replace_is_add_delete_add_then_sets_chains_rules() {
        let mut t = TableBatch::new(NfFamily::IP, "keel");
        // Declared out of order: rules still come after what they name.
        t.rule("c", vec![goto_stmt("d")]);
        t.chain("c");
        t.chain("d");
        t.timed_addr_set("s", 60);
        let j = render::json(&t.replace());
        let table = json!({"family": "ip", "name": "keel"});
        let cmds = j["nftables"].as_array().unwrap();
        assert_eq!(cmds[0], json!({"add": {"table": table}}));
        assert_eq!(cmds[1], json!({"delete": {"table": table}}));
        assert_eq!(cmds[2], json!({"add": {"table": table}}));
        assert_eq!(
            cmds[3],
            json!({"add": {"set": {"family": "ip", "table": "keel", "name": "s",
                   "type": "ipv4_addr", "flags": ["timeout"], "timeout": 60}}})
        );
        assert_eq!(cmds[4]["add"]["chain"]["name"], "c");
        assert_eq!(cmds[5]["add"]["chain"]["name"], "d");
        assert_eq!(
            cmds[6],
            json!({"add": {"rule": {"family": "ip", "table": "keel", "chain": "c",
                   "expr": [{"goto": {"target": "d"}}]}}})
        );
        assert_eq!(cmds.len(), 7);
    }

    #[test]
    fn values_are_typed_json() {
        assert_eq!(
            serde_json::to_value(l4_ports("udp", Some((9000, 9010)))).unwrap(),
            json!([
                {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "udp"}},
                {"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}},
                           "right": {"range": [9000, 9010]}}}
            ])
        );
        assert_eq!(
            serde_json::to_value(net("192.168.1.0/24".parse().unwrap())).unwrap(),
            json!({"prefix": {"addr": "192.168.1.0", "len": 24}})
        );
        assert_eq!(
            serde_json::to_value(verdict_map(
                payload("ip", "daddr"),
                [(addr(Ipv4Addr::new(10, 0, 0, 1)), jump("in-0"))]
            ))
            .unwrap(),
            json!({"vmap": {"key": {"payload": {"protocol": "ip", "field": "daddr"}},
                            "data": {"set": [["10.0.0.1", {"jump": {"target": "in-0"}}]]}}})
        );
    }
}
