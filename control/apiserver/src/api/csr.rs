//! What the server owns in a CertificateSigningRequest: who asked
//! (`spec.username`, `uid`, `groups`, `extra`, set from the authenticated
//! requester on create, whatever the client sent, as Kubernetes' CSR
//! strategy does, so approvers can trust them), and the `/approval`
//! subresource, which writes the conditions and nothing else (the issued
//! certificate is written through `/status` by the signer).

use serde_json::{json, Value};

use crate::auth::UserInfo;

/// Sets the requester fields of a new CSR from `user`. In-process callers
/// (`None`, trusted like the controllers) keep what they sent.
pub fn stamp_requester(obj: &mut Value, user: Option<&UserInfo>) {
    let Some(u) = user else {
        return;
    };
    if !obj["spec"].is_object() {
        return; // validation reports the missing spec
    }
    let spec = &mut obj["spec"];
    spec["username"] = json!(u.name);
    spec["uid"] = json!(u.uid);
    spec["groups"] = json!(u.groups);
    if u.extra.is_empty() {
        spec.as_object_mut().map(|s| s.remove("extra"));
    } else {
        spec["extra"] = json!(u.extra);
    }
    if u.uid.is_empty() {
        spec.as_object_mut().map(|s| s.remove("uid"));
    }
}

/// The stored CSR `old` with the conditions of `new` (an `/approval`
/// write): the spec, metadata and certificate stay as stored.
pub fn merge_approval(old: &Value, new: &Value) -> Value {
    let mut out = old.clone();
    if !out["status"].is_object() {
        out["status"] = json!({});
    }
    match new.pointer("/status/conditions") {
        Some(c) => out["status"]["conditions"] = c.clone(),
        None => {
            out["status"]
                .as_object_mut()
                .map(|s| s.remove("conditions"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requester_comes_from_the_authenticated_user() {
        let mut obj = json!({"spec": {"username": "system:admin", "groups": ["system:masters"]}});
        let u = UserInfo::authenticated(
            "system:bootstrap:abcdef",
            "",
            &["system:bootstrappers".to_string()],
        );
        stamp_requester(&mut obj, Some(&u));
        assert_eq!(obj["spec"]["username"], "system:bootstrap:abcdef");
        assert_eq!(
            obj["spec"]["groups"],
            json!(["system:bootstrappers", "system:authenticated"])
        );
        assert!(obj["spec"].get("uid").is_none());
    }

    #[test]
    fn approval_writes_only_conditions() {
        let old = json!({"spec": {"request": "x"}, "status": {"certificate": "c"}});
        let new = json!({"spec": {"request": "changed"},
                         "status": {"certificate": "forged",
                                    "conditions": [{"type": "Approved", "status": "True"}]}});
        let out = merge_approval(&old, &new);
        assert_eq!(out["spec"]["request"], "x");
        assert_eq!(out["status"]["certificate"], "c");
        assert_eq!(out["status"]["conditions"][0]["type"], "Approved");
    }
}
