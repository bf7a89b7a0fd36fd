//! The service account token volume ServiceAccount admission adds to a
//! pod, shaped exactly as Kubernetes 1.33 adds it, so in-cluster clients
//! (client-go, kube-rs, kubectl) find their credentials where they look:
//!
//! - a projected volume `kube-api-access-<5 random>` with a bound token
//!   (`token`, `expirationSeconds` 3607, the API's audiences), the cluster
//!   CA (`ca.crt` from the `kube-root-ca.crt` ConfigMap the root CA
//!   publisher keeps in every namespace) and the pod's `namespace`;
//! - a read-only mount of it at [`TOKEN_MOUNT_PATH`] in every container
//!   and init container, except those that already mount something there
//!   (a pod bringing its own credentials keeps them).
//!
//! A pod that already has a `kube-api-access-*` volume keeps it and gets
//! no second one; the volume is only added when some container mounts it.

use rand::Rng;
use serde_json::{json, Value};

/// Where in-cluster clients read `token`, `ca.crt` and `namespace`.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The volume's name prefix (a 5-character random suffix follows).
pub const VOLUME_PREFIX: &str = "kube-api-access-";
/// Kubernetes asks for 3607 s: a token the kubelet refreshes well before
/// the hour, recognisable (the odd 7 s) as an automounted one.
pub const TOKEN_EXPIRATION_S: i64 = 3607;
/// The ConfigMap holding the cluster CA in every namespace.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";

/// Kubernetes' `utilrand.String` alphabet: no vowels, no look-alikes.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Adds the token volume and its mounts to `pod` (a JSON Pod).
pub fn mount_token(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .find(|n| n.starts_with(VOLUME_PREFIX))
        .map(str::to_string);
    let name = existing.clone().unwrap_or_else(random_name);
    let mount = json!({"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        let containers = spec.get_mut(list).and_then(Value::as_array_mut);
        for c in containers.into_iter().flatten() {
            let Some(c) = c.as_object_mut() else { continue };
            let mounts = c
                .entry("volumeMounts")
                .or_insert_with(|| json!([]))
                .as_array_mut();
            let Some(mounts) = mounts else { continue };
            if mounts.iter().any(|m| m["mountPath"] == TOKEN_MOUNT_PATH) {
                continue;
            }
            mounts.push(mount.clone());
            needed = true;
        }
    }
    if existing.is_none() && needed {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Some(volumes) = volumes.as_array_mut() {
            volumes.push(volume(&name));
        }
    }
}

fn random_name() -> String {
    let mut rng = rand::thread_rng();
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{VOLUME_PREFIX}{suffix}")
}

/// The projected volume, with the defaults Kubernetes stores (mode 0644).
fn volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "defaultMode": 0o644,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_S, "path": "token"}},
                {"configMap": {"name": ROOT_CA_CONFIG_MAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{
                    "path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}
                }]}}
            ]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({"spec": {
            "initContainers": [{"name": "i"}],
            "containers": [
                {"name": "a", "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                {"name": "own", "volumeMounts": [{"name": "mine", "mountPath": TOKEN_MOUNT_PATH}]}
            ],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "mine", "emptyDir": {}}]
        }})
    }

    #[test]
    fn every_container_without_its_own_mount_gets_the_token() {
        let mut p = pod();
        mount_token(&mut p);
        let volumes = p["spec"]["volumes"].as_array().unwrap();
        assert_eq!(volumes.len(), 3);
        let v = &volumes[2];
        let name = v["name"].as_str().unwrap();
        let suffix = name.strip_prefix(VOLUME_PREFIX).unwrap();
        assert_eq!(suffix.len(), 5);
        assert!(suffix.bytes().all(|b| ALPHABET.contains(&b)), "{name}");
        let sources = &v["projected"]["sources"];
        assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(sources[0]["serviceAccountToken"]["path"], "token");
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(sources[1]["configMap"]["items"][0]["path"], "ca.crt");
        assert_eq!(
            sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
        assert_eq!(v["projected"]["defaultMode"], 420);
        let expected = json!({"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
        assert_eq!(p["spec"]["initContainers"][0]["volumeMounts"][0], expected);
        assert_eq!(p["spec"]["containers"][0]["volumeMounts"][1], expected);
        let own = p["spec"]["containers"][1]["volumeMounts"]
            .as_array()
            .unwrap();
        assert_eq!(
            own.len(),
            1,
            "a container with its own mount there keeps it"
        );
    }

    #[test]
    fn an_existing_volume_is_reused_and_none_is_added_when_unused() {
        let mut p = json!({"spec": {
            "containers": [{"name": "a"}],
            "volumes": [{"name": "kube-api-access-abcde", "emptyDir": {}}]
        }});
        mount_token(&mut p);
        assert_eq!(p["spec"]["volumes"].as_array().unwrap().len(), 1);
        assert_eq!(
            p["spec"]["containers"][0]["volumeMounts"][0]["name"],
            "kube-api-access-abcde"
        );

        let mut p = json!({"spec": {"containers": [
            {"name": "a", "volumeMounts": [{"name": "x", "mountPath": TOKEN_MOUNT_PATH}]}
        ], "volumes": [{"name": "x", "emptyDir": {}}]}});
        mount_token(&mut p);
        assert_eq!(p["spec"]["volumes"].as_array().unwrap().len(), 1);
    }
}
