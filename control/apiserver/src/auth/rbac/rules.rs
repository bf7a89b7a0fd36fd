//! One PolicyRule, and whether it allows a request, exactly as
//! Kubernetes' `RuleAllows` decides: `*` matches any verb, group,
//! resource or URL; `*/scale` matches the scale subresource of any
//! resource; `resourceNames` narrows to named objects; a non-resource URL
//! rule ending in `*` matches by prefix.

use serde::{Deserialize, Serialize};

use crate::auth::Attributes;

/// rbac.authorization.k8s.io/v1 PolicyRule. Absent lists are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Rule {
    pub verbs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    #[serde(rename = "nonResourceURLs", skip_serializing_if = "Vec::is_empty")]
    pub non_resource_urls: Vec<String>,
}

fn has(list: &[String], x: &str) -> bool {
    list.iter().any(|v| v == "*" || v == x)
}

impl Rule {
    /// Whether this rule allows the request `a`.
    pub fn allows(&self, a: &Attributes) -> bool {
        if !has(&self.verbs, &a.verb) {
            return false;
        }
        if !a.resource_request {
            return self.non_resource_urls.iter().any(|u| {
                u == "*"
                    || *u == a.path
                    || u.strip_suffix('*')
                        .is_some_and(|prefix| a.path.starts_with(prefix))
            });
        }
        has(&self.api_groups, &a.api_group)
            && self.matches_resource(&a.resource, &a.subresource)
            && (self.resource_names.is_empty() || self.resource_names.contains(&a.name))
    }

    fn matches_resource(&self, resource: &str, sub: &str) -> bool {
        let combined = if sub.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}/{sub}")
        };
        self.resources.iter().any(|r| {
            r == "*"
                || *r == combined
                || (!sub.is_empty() && r.strip_prefix("*/").is_some_and(|s| s == sub))
        })
    }

    /// The rule broken into rules of one verb, one group, one resource
    /// (and one name or URL) each: what [`covers`] checks one at a time.
    fn atoms(&self) -> Vec<Rule> {
        let one = |s: &String| vec![s.clone()];
        let mut out = Vec::new();
        for verb in &self.verbs {
            for url in &self.non_resource_urls {
                out.push(Rule {
                    verbs: one(verb),
                    non_resource_urls: one(url),
                    ..Default::default()
                });
            }
            for g in &self.api_groups {
                for r in &self.resources {
                    if self.resource_names.is_empty() {
                        out.push(Rule {
                            verbs: one(verb),
                            api_groups: one(g),
                            resources: one(r),
                            ..Default::default()
                        });
                    }
                    for n in &self.resource_names {
                        out.push(Rule {
                            verbs: one(verb),
                            api_groups: one(g),
                            resources: one(r),
                            resource_names: one(n),
                            ..Default::default()
                        });
                    }
                }
            }
        }
        out
    }

    /// Whether `self` grants everything the single-valued rule `atom` does.
    fn covers_atom(&self, atom: &Rule) -> bool {
        let verb = &atom.verbs[0];
        if !has(&self.verbs, verb) {
            return false;
        }
        if let Some(url) = atom.non_resource_urls.first() {
            return self.non_resource_urls.iter().any(|u| {
                u == "*"
                    || u == url
                    || u.strip_suffix('*').is_some_and(|p| {
                        url.starts_with(p) && (!url.ends_with('*') || url.len() > p.len())
                    })
            });
        }
        let (g, r) = (&atom.api_groups[0], &atom.resources[0]);
        let resource_ok = self.resources.iter().any(|mine| {
            mine == "*"
                || mine == r
                || (mine.starts_with("*/")
                    && r.split_once('/').is_some_and(|(_, s)| mine[2..] == *s))
        });
        has(&self.api_groups, g)
            && resource_ok
            && (self.resource_names.is_empty()
                || atom
                    .resource_names
                    .first()
                    .is_some_and(|n| self.resource_names.contains(n)))
    }
}

/// Whether the rules `owner` holds grant everything in `requested`
/// (Kubernetes' `validation.Covers`); the rules not covered, if any.
pub fn uncovered(owner: &[Rule], requested: &[Rule]) -> Vec<Rule> {
    requested
        .iter()
        .flat_map(Rule::atoms)
        .filter(|atom| !owner.iter().any(|o| o.covers_atom(atom)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Rule {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        Rule {
            verbs: v(verbs),
            api_groups: v(groups),
            resources: v(resources),
            ..Default::default()
        }
    }

    fn req(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn wildcards_and_subresources() {
        let r = rule(&["get", "list"], &[""], &["pods"]);
        assert!(r.allows(&req("get", "", "pods", "", "p")));
        assert!(!r.allows(&req("delete", "", "pods", "", "p")));
        assert!(!r.allows(&req("get", "apps", "pods", "", "p")));
        // A resource rule does not grant its subresources.
        assert!(!r.allows(&req("get", "", "pods", "log", "p")));
        assert!(rule(&["get"], &[""], &["pods/log"]).allows(&req("get", "", "pods", "log", "p")));
        assert!(rule(&["*"], &["*"], &["*"]).allows(&req("escalate", "x", "y", "z", "n")));
        assert!(rule(&["update"], &["apps"], &["*/scale"]).allows(&req(
            "update",
            "apps",
            "deployments",
            "scale",
            "w"
        )));
        assert!(!rule(&["update"], &["apps"], &["*/scale"]).allows(&req(
            "update",
            "apps",
            "deployments",
            "",
            "w"
        )));
    }

    #[test]
    fn resource_names_narrow() {
        let mut r = rule(&["get"], &[""], &["configmaps"]);
        r.resource_names = vec!["a".into()];
        assert!(r.allows(&req("get", "", "configmaps", "", "a")));
        assert!(!r.allows(&req("get", "", "configmaps", "", "b")));
        // A list has no name: resourceNames never allow it.
        assert!(!r.allows(&req("list", "", "configmaps", "", "")));
    }

    #[test]
    fn non_resource_urls() {
        let r = Rule {
            verbs: vec!["get".into()],
            non_resource_urls: vec!["/healthz".into(), "/apis/*".into()],
            ..Default::default()
        };
        let at = |p: &str| Attributes {
            verb: "get".into(),
            path: p.into(),
            ..Default::default()
        };
        assert!(r.allows(&at("/healthz")));
        assert!(r.allows(&at("/apis/apps/v1")));
        assert!(!r.allows(&at("/api")));
        // A non-resource rule never grants a resource request.
        assert!(!r.allows(&req("get", "", "healthz", "", "")));
    }

    #[test]
    fn coverage() {
        let all = rule(&["*"], &["*"], &["*"]);
        let pods = rule(&["get", "list"], &[""], &["pods"]);
        assert!(uncovered(std::slice::from_ref(&all), std::slice::from_ref(&pods)).is_empty());
        assert_eq!(
            uncovered(std::slice::from_ref(&pods), std::slice::from_ref(&all)).len(),
            1
        );
        let more = rule(&["get", "delete"], &[""], &["pods"]);
        let missing = uncovered(std::slice::from_ref(&pods), &[more]);
        assert_eq!(missing, vec![rule(&["delete"], &[""], &["pods"])]);
        let mut named = rule(&["get"], &[""], &["pods"]);
        named.resource_names = vec!["x".into()];
        assert!(uncovered(std::slice::from_ref(&pods), std::slice::from_ref(&named)).is_empty());
        assert_eq!(uncovered(&[named], &[pods]).len(), 2);
    }

    fn small_rule() -> impl proptest::strategy::Strategy<Value = Rule> {
        use proptest::prelude::*;
        let pick = |xs: &'static [&'static str]| {
            prop::collection::vec(prop::sample::select(xs), 0..3)
                .prop_map(|v| v.into_iter().map(str::to_string).collect::<Vec<_>>())
        };
        (
            pick(&["get", "list", "delete", "*"]),
            pick(&["", "apps", "*"]),
            pick(&["pods", "pods/log", "deployments", "*/scale", "*"]),
            pick(&["a", "b"]),
            pick(&["/healthz", "/api/*", "*"]),
            any::<bool>(),
        )
            .prop_map(
                |(verbs, api_groups, resources, resource_names, urls, non_resource)| {
                    if non_resource {
                        Rule {
                            verbs,
                            non_resource_urls: urls,
                            ..Default::default()
                        }
                    } else {
                        Rule {
                            verbs,
                            api_groups,
                            resources,
                            resource_names,
                            ..Default::default()
                        }
                    }
                },
            )
    }

    fn request() -> impl proptest::strategy::Strategy<Value = Attributes> {
        use proptest::prelude::*;
        (
            prop::sample::select(&["get", "list", "delete", "watch"][..]),
            prop::sample::select(&["", "apps", "batch"][..]),
            prop::sample::select(&["pods", "deployments", "secrets"][..]),
            prop::sample::select(&["", "log", "scale"][..]),
            prop::sample::select(&["", "a", "b", "c"][..]),
            prop::sample::select(&["/healthz", "/api/v1", "/apis", "/metrics"][..]),
            any::<bool>(),
        )
            .prop_map(
                |(verb, group, resource, sub, name, path, resource_request)| Attributes {
                    verb: verb.into(),
                    resource_request,
                    api_group: group.into(),
                    resource: resource.into(),
                    subresource: sub.into(),
                    name: name.into(),
                    path: path.into(),
                    ..Default::default()
                },
            )
    }

    proptest::proptest! {
        /// What escalation prevention relies on: when the owner's rules
        /// cover a requested rule, every request that rule allows is
        /// allowed by the owner's rules too.
        #[test]
        fn covered_rules_allow_nothing_more(
            owner in proptest::collection::vec(small_rule(), 0..4),
            wanted in small_rule(),
            req in request(),
        ) {
            if uncovered(&owner, std::slice::from_ref(&wanted)).is_empty() && wanted.allows(&req) {
                proptest::prop_assert!(owner.iter().any(|o| o.allows(&req)), "{owner:?} covers {wanted:?} but not {req:?}");
            }
        }
    }
}
