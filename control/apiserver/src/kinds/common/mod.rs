//! Machinery the kind modules share: the cause collector and field paths
//! ([`errs`]), tolerant JSON readers ([`json`]), name syntax ([`names`]),
//! object metadata ([`meta`]), label selectors ([`label_selector`]),
//! quantities ([`quantities`]), ports ([`ports`]), immutability rules
//! ([`update`]), defaulting helpers ([`defaults`]), the path-aware strict
//! decoder ([`decode`]), what the workload kinds share ([`workload`]),
//! table helpers ([`table`]), human durations ([`duration`]) and the
//! fields Go always emits ([`zero`]).

pub mod decode;
pub mod defaults;
pub mod duration;
pub mod errs;
pub mod json;
pub mod label_selector;
pub mod meta;
pub mod names;
pub mod ports;
pub mod quantities;
pub mod table;
#[cfg(test)]
pub mod testing;
pub mod update;
pub mod workload;
pub mod zero;
