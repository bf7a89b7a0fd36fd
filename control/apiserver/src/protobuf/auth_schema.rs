// The protobuf schema of the identity and access kinds kubectl's typed
// commands send as protobuf (`auth can-i`, `auth whoami`, `create role`,
// `create rolebinding`, ...): rbac.authorization.k8s.io/v1,
// authorization.k8s.io/v1 and authentication.k8s.io/v1 (with
// `create token`'s TokenRequest, whose status is never sent), written from
// their generated.proto (k8s.io/api v0.33) in gen_schema.py's notation.
// Fields keel does not read (field and label selectors of access reviews,
// a SubjectAccessReview's extra) are left out and skipped on the wire.

use super::schema::{META_LABEL_SELECTOR, META_OBJECT_META};
use super::{f, Message, Rule::*, Ty::*};

pub(super) static ROOTS: &[(&str, &str, &Message)] = &[
    ("rbac.authorization.k8s.io/v1", "Role", &RBAC_ROLE),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", &RBAC_CLUSTER_ROLE),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", &RBAC_ROLE_BINDING),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", &RBAC_ROLE_BINDING),
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview", &AUTHZ_SELF_SUBJECT_ACCESS_REVIEW),
    ("authorization.k8s.io/v1", "SubjectAccessReview", &AUTHZ_SUBJECT_ACCESS_REVIEW),
    ("authorization.k8s.io/v1", "LocalSubjectAccessReview", &AUTHZ_SUBJECT_ACCESS_REVIEW),
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview", &AUTHZ_SELF_SUBJECT_RULES_REVIEW),
    ("authentication.k8s.io/v1", "SelfSubjectReview", &AUTHN_SELF_SUBJECT_REVIEW),
    ("authentication.k8s.io/v1", "TokenReview", &AUTHN_TOKEN_REVIEW),
    ("authentication.k8s.io/v1", "TokenRequest", &AUTHN_TOKEN_REQUEST),
];

static RBAC_POLICY_RULE: Message = Message("PolicyRule", &[
    f(1, "verbs", Str, Rep),
    f(2, "apiGroups", Str, Rep),
    f(3, "resources", Str, Rep),
    f(4, "resourceNames", Str, Rep),
    f(5, "nonResourceURLs", Str, Rep),
]);

static RBAC_ROLE: Message = Message("Role", &[
    f(1, "metadata", Msg(&META_OBJECT_META), Opt),
    f(2, "rules", Msg(&RBAC_POLICY_RULE), Rep),
]);

static RBAC_AGGREGATION_RULE: Message = Message("AggregationRule", &[
    f(1, "clusterRoleSelectors", Msg(&META_LABEL_SELECTOR), Rep),
]);

static RBAC_CLUSTER_ROLE: Message = Message("ClusterRole", &[
    f(1, "metadata", Msg(&META_OBJECT_META), Opt),
    f(2, "rules", Msg(&RBAC_POLICY_RULE), Rep),
    f(3, "aggregationRule", Msg(&RBAC_AGGREGATION_RULE), Ptr),
]);

static RBAC_SUBJECT: Message = Message("Subject", &[
    f(1, "kind", Str, Req),
    f(2, "apiGroup", Str, Opt),
    f(3, "name", Str, Req),
    f(4, "namespace", Str, Opt),
]);

static RBAC_ROLE_REF: Message = Message("RoleRef", &[
    f(1, "apiGroup", Str, Req),
    f(2, "kind", Str, Req),
    f(3, "name", Str, Req),
]);

static RBAC_ROLE_BINDING: Message = Message("RoleBinding", &[
    f(1, "metadata", Msg(&META_OBJECT_META), Opt),
    f(2, "subjects", Msg(&RBAC_SUBJECT), Rep),
    f(3, "roleRef", Msg(&RBAC_ROLE_REF), Req),
]);

static AUTHZ_RESOURCE_ATTRIBUTES: Message = Message("ResourceAttributes", &[
    f(1, "namespace", Str, Opt),
    f(2, "verb", Str, Opt),
    f(3, "group", Str, Opt),
    f(4, "version", Str, Opt),
    f(5, "resource", Str, Opt),
    f(6, "subresource", Str, Opt),
    f(7, "name", Str, Opt),
]);

static AUTHZ_NON_RESOURCE_ATTRIBUTES: Message = Message("NonResourceAttributes", &[
    f(1, "path", Str, Opt),
    f(2, "verb", Str, Opt),
]);

static AUTHZ_SELF_SUBJECT_ACCESS_REVIEW_SPEC: Message = Message("SelfSubjectAccessReviewSpec", &[
    f(1, "resourceAttributes", Msg(&AUTHZ_RESOURCE_ATTRIBUTES), Ptr),
    f(2, "nonResourceAttributes", Msg(&AUTHZ_NON_RESOURCE_ATTRIBUTES), Ptr),
]);

static AUTHZ_SELF_SUBJECT_ACCESS_REVIEW: Message = Message("SelfSubjectAccessReview", &[
    f(1, "metadata", Msg(&META_OBJECT_META), Opt),
    f(2, "spec", Msg(&AUTHZ_SELF_SUBJECT_ACCESS_REVIEW_SPEC), Req),
]);

static AUTHZ_SUBJECT_ACCESS_REVIEW_SPEC: Message = Message("SubjectAccessReviewSpec", &[
    f(1, "resourceAttributes", Msg(&AUTHZ_RESOURCE_ATTRIBUTES), Ptr),
    f(2, "nonResourceAttributes", Msg(&AUTHZ_NON_RESOURCE_ATTRIBUTES), Ptr),
    f(3, "user", Str, Opt),
    f(4, "groups", Str, Rep),
    f(6, "uid", Str, Opt),
]);

static AUTHZ_SUBJECT_ACCESS_REVIEW: Message = Message("SubjectAccessReview", &[
    f(1, "metadata", Msg(&META_OBJECT_META), Opt),
    f(2, "spec", Msg(&AUTHZ_SUBJECT_ACCESS_REVIEW_SPEC), Req),
]);

static AUTHZ_SELF_SUBJECT_RULES_REVIEW_SPEC: Message = Message("SelfSubjectRulesReviewSpec", &[
    f(1, "namespace", Str, Opt),
]);

static AUTHZ_SELF_SUBJECT_RULES_REVIEW: Message = Message("SelfSubjectRulesReview", &[
    f(1, "metadata", Msg(&META_OBJECT_META), Opt),
    f(2, "spec", Msg(&AUTHZ_SELF_SUBJECT_RULES_REVIEW_SPEC), Req),
]);

static AUTHN_SELF_SUBJECT_REVIEW: Message = Message("SelfSubjectReview", &[
    f(1, "metadata", Msg(&META_OBJECT_META), Opt),
]);

static AUTHN_TOKEN_REVIEW_SPEC: Message = Message("TokenReviewSpec", &[
    f(1, "token", Str, Opt),
    f(2, "audiences", Str, Rep),
]);

static AUTHN_TOKEN_REVIEW: Message = Message("TokenReview", &[
    f(1, "metadata", Msg(&META_OBJECT_META), Opt),
    f(2, "spec", Msg(&AUTHN_TOKEN_REVIEW_SPEC), Req),
]);

static AUTHN_BOUND_OBJECT_REFERENCE: Message = Message("BoundObjectReference", &[
    f(1, "kind", Str, Opt),
    f(2, "apiVersion", Str, Opt),
    f(3, "name", Str, Opt),
    f(4, "uid", Str, Opt),
]);

static AUTHN_TOKEN_REQUEST_SPEC: Message = Message("TokenRequestSpec", &[
    f(1, "audiences", Str, Rep),
    f(3, "boundObjectRef", Msg(&AUTHN_BOUND_OBJECT_REFERENCE), Ptr),
    f(4, "expirationSeconds", I64, Ptr),
]);

static AUTHN_TOKEN_REQUEST: Message = Message("TokenRequest", &[
    f(1, "metadata", Msg(&META_OBJECT_META), Opt),
    f(2, "spec", Msg(&AUTHN_TOKEN_REQUEST_SPEC), Req),
]);
