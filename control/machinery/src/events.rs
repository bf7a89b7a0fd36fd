//! Event naming shared by every recorder (the controllers' and the node
//! service's): repeats of the same (object, reason, message, source) map to
//! one Event object, as client-go's aggregation does, so a recorder can
//! create first and bump `count` only on AlreadyExists.

/// What makes two events "the same" and names them.
#[derive(Debug, Clone, Copy)]
pub struct EventKey<'a> {
    pub object_name: &'a str,
    pub object_uid: &'a str,
    pub field_path: &'a str,
    pub reason: &'a str,
    pub message: &'a str,
    pub component: &'a str,
}

/// `<object name>.<hash of what makes the event the same>`, at most 253
/// characters: the hash keeps it unique when the object name is cut.
pub fn event_name(k: EventKey<'_>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [k.object_uid, k.field_path, k.reason, k.message, k.component] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let obj = if k.object_name.is_empty() {
        "object"
    } else {
        k.object_name
    };
    let keep = obj
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .take_while(|end| *end <= 253 - 1 - hex.len())
        .last()
        .unwrap_or(0);
    format!("{}.{hex}", &obj[..keep])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(name: &'a str, reason: &'a str) -> EventKey<'a> {
        EventKey {
            object_name: name,
            object_uid: "u1",
            field_path: "",
            reason,
            message: "m",
            component: "keel-scheduler",
        }
    }

    #[test]
    fn same_event_same_name_other_reason_other_name() {
        let a = event_name(key("p", "Scheduled"));
        assert_eq!(a, event_name(key("p", "Scheduled")));
        assert_ne!(a, event_name(key("p", "Failed")));
        assert!(a.starts_with("p."));
    }

    #[test]
    fn names_of_long_objects_stay_within_253_characters() {
        let long = "x".repeat(253);
        let n = event_name(key(&long, "Scheduled"));
        assert_eq!(n.len(), 253, "{n}");
        assert!(n.starts_with("xxx") && n.contains('.'));
    }
}
