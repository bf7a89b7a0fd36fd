#!/usr/bin/env python3
"""Every kind keel serves, through the official Python `kubernetes` client.

Usage: decode_all.py KUBECONFIG

The client's models are strict: an object missing a field that Go always
emits (a required field of the OpenAPI schema) or of the wrong JSON type
fails to decode. So this script creates one object of every served kind
with the typed API (which sends neither apiVersion nor kind), reads each
back, lists it and consumes watch events, all decoded into the typed
models with client-side validation on (the default); waits (bounded) for
the controllers to act on the workloads, then decodes everything again so
statuses written by controllers and agents are decoded too. It also checks
the raw JSON for the zero values Go emits that this client version may
not require (older clients do).

A served resource (from discovery, /api/v1 and /apis) that this script does
not cover is a failure, so new kinds cannot be forgotten. A kind the script
knows that the server does not serve is reported and skipped.

Exit status 0 when everything decoded; 1 with a list of failures otherwise.
"""

import datetime
import json
import sys
import threading
import time
import traceback
import uuid

from kubernetes import client, config, watch
from kubernetes.client import (
    AdmissionregistrationV1WebhookClientConfig as WebhookClientConfig,
    CoreV1EndpointPort,
    CoreV1Event,
    DiscoveryV1EndpointPort,
    EventsV1Event,
    RbacV1Subject,
    V1Container,
    V1ControllerRevision,
    V1ConfigMap,
    V1CustomResourceDefinition,
    V1CustomResourceDefinitionNames,
    V1CustomResourceDefinitionSpec,
    V1CustomResourceDefinitionVersion,
    V1CustomResourceValidation,
    V1DaemonSet,
    V1DaemonSetSpec,
    V1Deployment,
    V1DeploymentSpec,
    V1Endpoint,
    V1EndpointAddress,
    V1EndpointSlice,
    V1EndpointSubset,
    V1Endpoints,
    V1HostPathVolumeSource,
    V1Ingress,
    V1IngressBackend,
    V1IngressClass,
    V1IngressClassSpec,
    V1IngressServiceBackend,
    V1IngressSpec,
    V1Job,
    V1JobSpec,
    V1JobTemplateSpec,
    V1CronJob,
    V1CronJobSpec,
    V1JSONSchemaProps,
    V1LabelSelector,
    V1Lease,
    V1LeaseSpec,
    V1LimitRange,
    V1LimitRangeItem,
    V1LimitRangeSpec,
    V1MutatingWebhook,
    V1MutatingWebhookConfiguration,
    V1Namespace,
    V1NetworkPolicy,
    V1NetworkPolicySpec,
    V1Node,
    V1NodeSpec,
    V1ObjectMeta,
    V1ObjectReference,
    V1PersistentVolume,
    V1PersistentVolumeClaim,
    V1PersistentVolumeClaimSpec,
    V1PersistentVolumeSpec,
    V1Pod,
    V1PodDisruptionBudget,
    V1PodDisruptionBudgetSpec,
    V1PodSpec,
    V1PodTemplate,
    V1PodTemplateSpec,
    V1PolicyRule,
    V1PriorityClass,
    V1ReplicaSet,
    V1ReplicaSetSpec,
    V1ReplicationController,
    V1ReplicationControllerSpec,
    V1ResourceQuota,
    V1ResourceQuotaSpec,
    V1Role,
    V1RoleBinding,
    V1ClusterRole,
    V1ClusterRoleBinding,
    V1RoleRef,
    V1RuleWithOperations,
    V1RuntimeClass,
    V1Secret,
    V1Service,
    V1ServiceAccount,
    V1ServiceBackendPort,
    V1ServicePort,
    V1ServiceSpec,
    V1StatefulSet,
    V1StatefulSetSpec,
    V1StorageClass,
    V1Taint,
    V1ValidatingWebhook,
    V1ValidatingWebhookConfiguration,
    V2CrossVersionObjectReference,
    V2HorizontalPodAutoscaler,
    V2HorizontalPodAutoscalerSpec,
)

try:  # kubernetes >= 29
    from kubernetes.client import V1VolumeResourceRequirements as VolumeResources
except ImportError:  # pragma: no cover - older clients
    from kubernetes.client import V1ResourceRequirements as VolumeResources

RUN = uuid.uuid4().hex[:6]
NS = f"typed-{RUN}"
IMAGE = "keel/pause"
# How long the controllers get to act on the workloads.
CONTROLLER_WAIT_S = 40
# How long one watch may take to show the object it looks for.
WATCH_S = 5

failures = []


def fail(what, err):
    text = f"{what}: {type(err).__name__}: {err}"
    failures.append(text)
    print(f"  FAIL {text}", flush=True)


def meta(name, labels=None):
    return V1ObjectMeta(name=name, labels=labels)


def template(app, restart="Always"):
    return V1PodTemplateSpec(
        metadata=meta(None, {"app": app}),
        spec=V1PodSpec(
            containers=[V1Container(name="c", image=IMAGE)],
            restart_policy=restart,
            termination_grace_period_seconds=1,
        ),
    )


def selector(app):
    return V1LabelSelector(match_labels={"app": app})


def webhook_parts():
    cfg = WebhookClientConfig(url="https://127.0.0.1:9/typed")
    rules = [
        V1RuleWithOperations(
            operations=["CREATE"],
            api_groups=["typed.example.com"],
            api_versions=["v1"],
            resources=["gadgets"],
        )
    ]
    return cfg, rules


# ---- the kinds ---------------------------------------------------------------
# (group, version, resource) -> (api class, method suffix, namespaced, builder)
# The builder returns a typed object named `name`.


def b_namespace(name):
    return V1Namespace(metadata=meta(name))


def b_pod(name):
    return V1Pod(
        metadata=meta(name, {"app": "typed-pod"}),
        spec=V1PodSpec(
            containers=[V1Container(name="c", image=IMAGE)],
            termination_grace_period_seconds=1,
        ),
    )


def b_service(name):
    return V1Service(
        metadata=meta(name),
        spec=V1ServiceSpec(
            selector={"app": "typed-deploy"},
            ports=[V1ServicePort(port=80, target_port=8080)],
        ),
    )


def b_node(name):
    return V1Node(
        metadata=meta(name, {"typed": "yes"}),
        spec=V1NodeSpec(
            unschedulable=True,
            taints=[V1Taint(key="typed.example.com/fake", effect="NoSchedule")],
        ),
    )


def b_endpoints(name):
    return V1Endpoints(
        metadata=meta(name),
        subsets=[
            V1EndpointSubset(
                addresses=[V1EndpointAddress(ip="127.0.0.9")],
                ports=[CoreV1EndpointPort(port=80, name="http")],
            )
        ],
    )


def b_core_event(name):
    return CoreV1Event(
        metadata=meta(name),
        involved_object=V1ObjectReference(kind="Pod", name="typed-pod", namespace=NS),
        reason="Typed",
        message="decoded by the Python client",
        type="Normal",
    )


def b_events_event(name):
    return EventsV1Event(
        metadata=meta(name),
        event_time=datetime.datetime.now(datetime.timezone.utc),
        reporting_controller="example.com/typed",
        reporting_instance="typed-1",
        action="Check",
        reason="Typed",
        type="Normal",
        note="decoded by the Python client",
        regarding=V1ObjectReference(kind="Pod", name="typed-pod", namespace=NS),
    )


def b_pv(name):
    return V1PersistentVolume(
        metadata=meta(name),
        spec=V1PersistentVolumeSpec(
            capacity={"storage": "1Gi"},
            access_modes=["ReadWriteOnce"],
            host_path=V1HostPathVolumeSource(path=f"/tmp/{name}"),
            storage_class_name="typed-manual",
        ),
    )


def b_pvc(name):
    return V1PersistentVolumeClaim(
        metadata=meta(name),
        spec=V1PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"],
            resources=VolumeResources(requests={"storage": "1Gi"}),
            storage_class_name="typed-manual",
        ),
    )


def b_rc(name):
    return V1ReplicationController(
        metadata=meta(name),
        spec=V1ReplicationControllerSpec(
            replicas=1, selector={"app": "typed-rc"}, template=template("typed-rc")
        ),
    )


def b_deployment(name):
    return V1Deployment(
        metadata=meta(name),
        spec=V1DeploymentSpec(
            replicas=2, selector=selector("typed-deploy"), template=template("typed-deploy")
        ),
    )


def b_replicaset(name):
    return V1ReplicaSet(
        metadata=meta(name),
        spec=V1ReplicaSetSpec(
            replicas=1, selector=selector("typed-rs"), template=template("typed-rs")
        ),
    )


def b_statefulset(name):
    return V1StatefulSet(
        metadata=meta(name),
        spec=V1StatefulSetSpec(
            replicas=1,
            service_name="typed-sts",
            selector=selector("typed-sts"),
            template=template("typed-sts"),
        ),
    )


def b_daemonset(name):
    return V1DaemonSet(
        metadata=meta(name),
        spec=V1DaemonSetSpec(selector=selector("typed-ds"), template=template("typed-ds")),
    )


def b_job(name):
    return V1Job(
        metadata=meta(name),
        spec=V1JobSpec(backoff_limit=1, template=template("typed-job", restart="Never")),
    )


def b_cronjob(name):
    return V1CronJob(
        metadata=meta(name),
        spec=V1CronJobSpec(
            schedule="0 0 1 1 *",
            job_template=V1JobTemplateSpec(
                spec=V1JobSpec(template=template("typed-cron", restart="Never"))
            ),
        ),
    )


def b_hpa(name):
    return V2HorizontalPodAutoscaler(
        metadata=meta(name),
        spec=V2HorizontalPodAutoscalerSpec(
            scale_target_ref=V2CrossVersionObjectReference(
                api_version="apps/v1", kind="Deployment", name="typed-deployments"
            ),
            min_replicas=2,
            max_replicas=3,
        ),
    )


def b_endpointslice(name):
    # No endpoints: Go emits the list anyway, and older clients require it.
    return V1EndpointSlice(
        metadata=meta(name, {"kubernetes.io/service-name": "typed-none"}),
        address_type="IPv4",
        ports=[DiscoveryV1EndpointPort(port=80, name="http")],
    )


def b_ingress(name):
    return V1Ingress(
        metadata=meta(name),
        spec=V1IngressSpec(
            default_backend=V1IngressBackend(
                service=V1IngressServiceBackend(
                    name="typed-service", port=V1ServiceBackendPort(number=80)
                )
            )
        ),
    )


def b_webhook_m(name):
    cfg, rules = webhook_parts()
    return V1MutatingWebhookConfiguration(
        metadata=meta(name),
        webhooks=[
            V1MutatingWebhook(
                name="typed.example.com",
                admission_review_versions=["v1"],
                side_effects="None",
                failure_policy="Ignore",
                client_config=cfg,
                rules=rules,
            )
        ],
    )


def b_webhook_v(name):
    cfg, rules = webhook_parts()
    return V1ValidatingWebhookConfiguration(
        metadata=meta(name),
        webhooks=[
            V1ValidatingWebhook(
                name="typed.example.com",
                admission_review_versions=["v1"],
                side_effects="None",
                failure_policy="Ignore",
                client_config=cfg,
                rules=rules,
            )
        ],
    )


def b_crd(name):
    plural = name.split(".")[0]
    return V1CustomResourceDefinition(
        metadata=meta(name),
        spec=V1CustomResourceDefinitionSpec(
            group=name.split(".", 1)[1],
            names=V1CustomResourceDefinitionNames(
                kind="Gadget", plural=plural, singular="gadget", list_kind="GadgetList"
            ),
            scope="Namespaced",
            versions=[
                V1CustomResourceDefinitionVersion(
                    name="v1",
                    served=True,
                    storage=True,
                    schema=V1CustomResourceValidation(
                        open_apiv3_schema=V1JSONSchemaProps(
                            type="object", x_kubernetes_preserve_unknown_fields=True
                        )
                    ),
                )
            ],
        ),
    )


# A CSR for a user certificate (made once with openssl; the key is not
# kept: nothing is ever signed with it).
TYPED_CSR_PEM = """-----BEGIN CERTIFICATE REQUEST-----
MIHiMIGJAgEAMCcxFTATBgNVBAMMDHR5cGVkLWNsaWVudDEOMAwGA1UECgwFdHlw
ZWQwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAR4hwTq+Knb+6RmgqXLCneEXMHi
PJZhHGp3w3haKWETmB/nbVMnsr5EdV+kI3KQTkT6keU3pr7BvpQreBHmottaoAAw
CgYIKoZIzj0EAwIDSAAwRQIhAKkA9c9AI3VtwZEsBq+5br/mZdaahFTfna1h2wxt
9DP4AiBGuN5Sve14wHu28CnBk7pG4fS20T+UA1Xph5qu/vWBKg==
-----END CERTIFICATE REQUEST-----
"""


def b_csr(name):
    import base64

    return client.V1CertificateSigningRequest(
        metadata=meta(name),
        spec=client.V1CertificateSigningRequestSpec(
            request=base64.b64encode(TYPED_CSR_PEM.encode()).decode(),
            signer_name="kubernetes.io/kube-apiserver-client",
            usages=["client auth", "digital signature"],
        ),
    )


RULES = [V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "list"])]


def subjects():
    return [RbacV1Subject(kind="ServiceAccount", name="default", namespace=NS)]


CORE, APPS, BATCH = client.CoreV1Api, client.AppsV1Api, client.BatchV1Api
KINDS = {
    ("", "v1", "namespaces"): (CORE, "namespace", False, b_namespace),
    ("", "v1", "pods"): (CORE, "namespaced_pod", True, b_pod),
    ("", "v1", "services"): (CORE, "namespaced_service", True, b_service),
    ("", "v1", "nodes"): (CORE, "node", False, b_node),
    ("", "v1", "endpoints"): (CORE, "namespaced_endpoints", True, b_endpoints),
    ("", "v1", "configmaps"): (
        CORE, "namespaced_config_map", True,
        lambda n: V1ConfigMap(metadata=meta(n), data={"a": "1"}),
    ),
    ("", "v1", "secrets"): (
        CORE, "namespaced_secret", True,
        lambda n: V1Secret(metadata=meta(n), data={"a": "MQ=="}),
    ),
    ("", "v1", "serviceaccounts"): (
        CORE, "namespaced_service_account", True,
        lambda n: V1ServiceAccount(metadata=meta(n)),
    ),
    ("", "v1", "events"): (CORE, "namespaced_event", True, b_core_event),
    ("", "v1", "persistentvolumes"): (CORE, "persistent_volume", False, b_pv),
    ("", "v1", "persistentvolumeclaims"): (
        CORE, "namespaced_persistent_volume_claim", True, b_pvc,
    ),
    ("", "v1", "resourcequotas"): (
        CORE, "namespaced_resource_quota", True,
        lambda n: V1ResourceQuota(metadata=meta(n), spec=V1ResourceQuotaSpec(hard={"pods": "50"})),
    ),
    ("", "v1", "limitranges"): (
        CORE, "namespaced_limit_range", True,
        lambda n: V1LimitRange(
            metadata=meta(n),
            # Not Container: its max would become every pod's default limit.
            spec=V1LimitRangeSpec(
                limits=[V1LimitRangeItem(type="PersistentVolumeClaim", max={"storage": "10Gi"})]
            ),
        ),
    ),
    ("", "v1", "replicationcontrollers"): (
        CORE, "namespaced_replication_controller", True, b_rc,
    ),
    ("", "v1", "podtemplates"): (
        CORE, "namespaced_pod_template", True,
        lambda n: V1PodTemplate(metadata=meta(n), template=template("typed-tpl")),
    ),
    ("apps", "v1", "deployments"): (APPS, "namespaced_deployment", True, b_deployment),
    ("apps", "v1", "replicasets"): (APPS, "namespaced_replica_set", True, b_replicaset),
    ("apps", "v1", "statefulsets"): (APPS, "namespaced_stateful_set", True, b_statefulset),
    ("apps", "v1", "daemonsets"): (APPS, "namespaced_daemon_set", True, b_daemonset),
    ("apps", "v1", "controllerrevisions"): (
        APPS, "namespaced_controller_revision", True,
        lambda n: V1ControllerRevision(metadata=meta(n), revision=1, data={"spec": {}}),
    ),
    ("batch", "v1", "jobs"): (BATCH, "namespaced_job", True, b_job),
    ("batch", "v1", "cronjobs"): (BATCH, "namespaced_cron_job", True, b_cronjob),
    ("autoscaling", "v2", "horizontalpodautoscalers"): (
        client.AutoscalingV2Api, "namespaced_horizontal_pod_autoscaler", True, b_hpa,
    ),
    ("coordination.k8s.io", "v1", "leases"): (
        client.CoordinationV1Api, "namespaced_lease", True,
        lambda n: V1Lease(
            metadata=meta(n), spec=V1LeaseSpec(holder_identity="typed", lease_duration_seconds=30)
        ),
    ),
    ("discovery.k8s.io", "v1", "endpointslices"): (
        client.DiscoveryV1Api, "namespaced_endpoint_slice", True, b_endpointslice,
    ),
    ("networking.k8s.io", "v1", "ingresses"): (
        client.NetworkingV1Api, "namespaced_ingress", True, b_ingress,
    ),
    ("networking.k8s.io", "v1", "networkpolicies"): (
        client.NetworkingV1Api, "namespaced_network_policy", True,
        lambda n: V1NetworkPolicy(
            metadata=meta(n),
            spec=V1NetworkPolicySpec(pod_selector=selector("typed-none"), policy_types=["Ingress"]),
        ),
    ),
    ("networking.k8s.io", "v1", "ingressclasses"): (
        client.NetworkingV1Api, "ingress_class", False,
        lambda n: V1IngressClass(metadata=meta(n), spec=V1IngressClassSpec(controller="example.com/typed")),
    ),
    ("events.k8s.io", "v1", "events"): (
        client.EventsV1Api, "namespaced_event", True, b_events_event,
    ),
    ("policy", "v1", "poddisruptionbudgets"): (
        client.PolicyV1Api, "namespaced_pod_disruption_budget", True,
        lambda n: V1PodDisruptionBudget(
            metadata=meta(n),
            spec=V1PodDisruptionBudgetSpec(min_available=1, selector=selector("typed-deploy")),
        ),
    ),
    ("storage.k8s.io", "v1", "storageclasses"): (
        client.StorageV1Api, "storage_class", False,
        lambda n: V1StorageClass(metadata=meta(n), provisioner="example.com/typed"),
    ),
    ("scheduling.k8s.io", "v1", "priorityclasses"): (
        client.SchedulingV1Api, "priority_class", False,
        lambda n: V1PriorityClass(metadata=meta(n), value=1000),
    ),
    ("node.k8s.io", "v1", "runtimeclasses"): (
        client.NodeV1Api, "runtime_class", False,
        lambda n: V1RuntimeClass(metadata=meta(n), handler="typed"),
    ),
    ("rbac.authorization.k8s.io", "v1", "roles"): (
        client.RbacAuthorizationV1Api, "namespaced_role", True,
        lambda n: V1Role(metadata=meta(n), rules=RULES),
    ),
    ("rbac.authorization.k8s.io", "v1", "rolebindings"): (
        client.RbacAuthorizationV1Api, "namespaced_role_binding", True,
        lambda n: V1RoleBinding(
            metadata=meta(n),
            role_ref=V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="typed-roles"),
            subjects=subjects(),
        ),
    ),
    ("rbac.authorization.k8s.io", "v1", "clusterroles"): (
        client.RbacAuthorizationV1Api, "cluster_role", False,
        lambda n: V1ClusterRole(metadata=meta(n), rules=RULES),
    ),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings"): (
        client.RbacAuthorizationV1Api, "cluster_role_binding", False,
        lambda n: V1ClusterRoleBinding(
            metadata=meta(n),
            role_ref=V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=n),
            subjects=subjects(),
        ),
    ),
    ("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations"): (
        client.AdmissionregistrationV1Api, "mutating_webhook_configuration", False, b_webhook_m,
    ),
    ("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations"): (
        client.AdmissionregistrationV1Api, "validating_webhook_configuration", False, b_webhook_v,
    ),
    ("certificates.k8s.io", "v1", "certificatesigningrequests"): (
        client.CertificatesV1Api, "certificate_signing_request", False, b_csr,
    ),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions"): (
        client.ApiextensionsV1Api, "custom_resource_definition", False, b_crd,
    ),
}

# The API class that lists each group version's resources.
DISCOVERY = {(g, v): api for (g, v, _), (api, *_rest) in KINDS.items()}
# Groups holding only create-only reviews (never stored, nothing to decode
# back): their discovery is read, and their resources skipped below.
DISCOVERY[("authorization.k8s.io", "v1")] = client.AuthorizationV1Api
DISCOVERY[("authentication.k8s.io", "v1")] = client.AuthenticationV1Api

# Kinds whose controllers act on them: re-read after the wait.
WORKLOADS = {
    "deployments", "replicasets", "statefulsets", "daemonsets", "jobs", "cronjobs",
    "replicationcontrollers", "horizontalpodautoscalers", "poddisruptionbudgets",
    "pods", "services", "endpoints", "endpointslices", "persistentvolumeclaims",
    "persistentvolumes", "resourcequotas", "namespaces", "serviceaccounts", "nodes",
}

# Fields Go always emits that this client version may not require (older
# clients do), checked in the raw JSON: resource -> dotted paths.
RAW_ZEROS = {
    "replicasets": ["status.replicas"],
    "replicationcontrollers": ["status.replicas"],
    "statefulsets": ["status.replicas", "status.availableReplicas"],
    "daemonsets": [
        "status.currentNumberScheduled", "status.desiredNumberScheduled",
        "status.numberMisscheduled", "status.numberReady",
    ],
    "horizontalpodautoscalers": ["status.currentReplicas", "status.desiredReplicas"],
    "poddisruptionbudgets": [
        "status.currentHealthy", "status.desiredHealthy",
        "status.disruptionsAllowed", "status.expectedPods",
    ],
    "endpointslices": ["endpoints"],
    "services": ["status.loadBalancer"],
    "ingresses": ["status.loadBalancer"],
    "namespaces": ["status.phase"],
    "persistentvolumeclaims": ["status.phase"],
    "persistentvolumes": ["status.phase"],
}


def object_name(resource, namespaced):
    """A name per resource; cluster-scoped ones carry the run id."""
    if resource == "namespaces":
        return NS
    if resource == "customresourcedefinitions":
        return f"gadgets.typed{RUN}.example.com"
    return f"typed-{resource}" if namespaced else f"typed-{resource}-{RUN}"


class Kind:
    """One served kind: its typed API calls and the object made of it."""

    def __init__(self, key, api_client, subresources):
        self.group, self.version, self.resource = key
        api, self.suffix, self.namespaced, self.build = KINDS[key]
        self.api = api(api_client)
        self.name = object_name(self.resource, self.namespaced)
        self.subresources = subresources

    def label(self):
        gv = f"{self.group}/{self.version}" if self.group else self.version
        return f"{self.resource}.{gv}"

    def method(self, verb, sub=""):
        return getattr(self.api, f"{verb}_{self.suffix}{sub}", None)

    def create(self):
        body = self.build(self.name)
        if self.namespaced:
            return self.method("create")(NS, body)
        return self.method("create")(body)

    def read(self, sub="", **kwargs):
        fn = self.method("read", sub)
        if fn is None:
            return None
        if self.namespaced:
            return fn(self.name, NS, **kwargs)
        return fn(self.name, **kwargs)

    def list(self):
        return self.method("list")(NS) if self.namespaced else self.method("list")()

    def list_args(self):
        return (self.method("list"), (NS,) if self.namespaced else ())

    def raw(self):
        """The object's JSON as the server sent it."""
        return json.loads(self.read(_preload_content=False).data)


def typed(obj, what):
    """A decoded object must be a model, not the raw dict."""
    if isinstance(obj, dict) or obj is None:
        raise TypeError(f"{what} was not decoded into a model: {type(obj).__name__}")
    return obj


# Read-only groups without a typed API in the client, read through
# CustomObjectsApi instead: the metrics API (NodeMetrics, PodMetrics).
METRICS = ("metrics.k8s.io", "v1beta1", "*")
READ_ONLY = {METRICS}


def check_metrics(api_client):
    """The metrics API lists as metrics-server's does."""
    co = client.CustomObjectsApi(api_client)
    try:
        nodes = co.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")
        if nodes.get("kind") != "NodeMetricsList":
            raise AssertionError(f"nodes metrics: {nodes}")
        pods = co.list_namespaced_custom_object("metrics.k8s.io", "v1beta1", NS, "pods")
        if pods.get("kind") != "PodMetricsList":
            raise AssertionError(f"pods metrics: {pods}")
        print(f"  metrics.k8s.io: {len(nodes['items'])} node(s) measured")
    except Exception as e:  # noqa: BLE001 - reported as a failure
        fail("metrics.k8s.io", e)


def discover(api_client):
    """Served (group, version, resource) and their subresources."""
    served = {}
    core = client.CoreV1Api(api_client).get_api_resources()
    groups = [("", "v1", core)]
    for g in client.ApisApi(api_client).get_api_versions().groups:
        for v in g.versions:
            api = DISCOVERY.get((g.name, v.version))
            if api is None:
                groups.append((g.name, v.version, None))
                continue
            groups.append((g.name, v.version, api(api_client).get_api_resources()))
    for group, version, listing in groups:
        if listing is None:
            served[(group, version, "*")] = set()
            continue
        for r in listing.resources:
            if set(r.verbs or []) == {"create"} and "/" not in r.name:
                continue  # a review (SelfSubjectAccessReview, TokenReview, ...)
            base, _, sub = r.name.partition("/")
            served.setdefault((group, version, base), set())
            if sub:
                served[(group, version, base)].add(sub)
    return served


def check_watch(kind):
    """Watch events decode; the object shows up as ADDED."""
    w = watch.Watch()
    seen = 0
    found = False
    fn, args = kind.list_args()
    for ev in w.stream(fn, *args, timeout_seconds=WATCH_S):
        seen += 1
        if ev["type"] in ("ADDED", "MODIFIED", "DELETED"):
            obj = typed(ev["object"], "watch event object")
            if obj.metadata.name == kind.name:
                found = True
                w.stop()
    if not found:
        raise AssertionError(f"no watch event for {kind.name} in {seen} events")
    return seen


def check_raw(kind):
    paths = RAW_ZEROS.get(kind.resource)
    if not paths:
        return
    obj = kind.raw()
    for p in paths:
        v = obj
        for seg in p.split("."):
            v = v.get(seg) if isinstance(v, dict) else None
        if v is None:
            raise AssertionError(f"{p} missing in {obj.get('status', obj)}")


def decode_everything(kinds, when):
    for kind in kinds:
        label = kind.label()
        try:
            obj = typed(kind.read(), "read")
            lst = kind.list()
            items = [typed(i, "list item") for i in lst.items]
            names = {i.metadata.name for i in items}
            if kind.name not in names:
                raise AssertionError(f"{kind.name} not listed among {sorted(names)}")
            n = check_watch(kind)
            subs = []
            for sub in sorted(kind.subresources & {"status", "scale"}):
                got = kind.read(f"_{sub}")
                if got is not None:
                    typed(got, sub)
                    subs.append(sub)
            check_raw(kind)
            status = getattr(obj, "status", None)
            print(
                f"  ok {label:<55} {when}: read, list ({len(items)}), watch ({n} events)"
                + (f", {'/'.join(subs)}" if subs else "")
                + (f"; status {summary(status)}" if status is not None else ""),
                flush=True,
            )
        except Exception as e:  # noqa: BLE001 - every failure is reported
            fail(f"{label} {when}", e)


def summary(status):
    d = status.to_dict() if hasattr(status, "to_dict") else {}
    keep = {k: v for k, v in d.items() if isinstance(v, (int, str)) and v is not None}
    return ", ".join(f"{k}={v}" for k, v in sorted(keep.items())[:5]) or "{}"


class WatchRecorder(threading.Thread):
    """Watches a kind in the namespace while controllers act on it, so the
    MODIFIED events their status writes make are decoded too."""

    def __init__(self, kind, seconds):
        super().__init__(daemon=True)
        self.kind, self.seconds = kind, seconds
        # A client of its own: the shared one is not thread-safe.
        api = kind.api.__class__(client.ApiClient())
        self.fn = getattr(api, f"list_{kind.suffix}")
        self.counts, self.error = {}, None

    def run(self):
        try:
            w = watch.Watch()
            for ev in w.stream(self.fn, NS, timeout_seconds=self.seconds):
                typed(ev["object"], "watch event object")
                self.counts[ev["type"]] = self.counts.get(ev["type"], 0) + 1
        except Exception as e:  # noqa: BLE001
            self.error = e


def wait_for_controllers(kinds):
    """Bounded: the Deployment's pods ready, the namespace's default
    ServiceAccount made; whatever else the controllers did is decoded as is."""
    by = {k.resource: k for k in kinds}
    deadline = time.monotonic() + CONTROLLER_WAIT_S
    want = {"deployment ready": False, "default serviceaccount": False}
    while time.monotonic() < deadline and not all(want.values()):
        try:
            d = by["deployments"].read()
            want["deployment ready"] = (d.status.ready_replicas or 0) >= 2
        except Exception as e:  # noqa: BLE001
            fail("deployments while waiting", e)
            return
        try:
            by["pods"].api.read_namespaced_service_account("default", NS)
            want["default serviceaccount"] = True
        except client.ApiException as e:
            if e.status != 404:
                raise
        time.sleep(0.5)
    for what, done in want.items():
        if not done:
            fail("controllers", AssertionError(f"{what} not reached in {CONTROLLER_WAIT_S} s"))
        else:
            print(f"  ok controllers: {what}", flush=True)


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    config.load_kube_config(config_file=sys.argv[1])
    api_client = client.ApiClient()
    cfg = api_client.configuration
    print(f"kubernetes client, client_side_validation={getattr(cfg, 'client_side_validation', True)}")

    served = discover(api_client)
    unknown = [k for k in served if k not in KINDS and k not in READ_ONLY]
    if METRICS in served:
        check_metrics(api_client)
    for g, v, r in unknown:
        fail("discovery", AssertionError(f"served {r} in {g or 'core'}/{v} is not covered by this script"))
    kinds = []
    for key in KINDS:
        if key in served:
            kinds.append(Kind(key, api_client, served[key]))
        else:
            g, v, r = key
            print(f"  skip {r}.{g or 'core'}/{v}: not served")
    print(f"{len(kinds)} served kinds covered, namespace {NS}", flush=True)

    # The namespace first, as the Python client sends it: no kind, no apiVersion.
    kinds.sort(key=lambda k: k.resource != "namespaces")
    watchers = [
        WatchRecorder(k, CONTROLLER_WAIT_S + 30)
        for k in kinds
        if k.resource in {"pods", "deployments", "replicasets", "daemonsets", "statefulsets", "jobs"}
    ]
    print("create (typed, without kind or apiVersion):", flush=True)
    for kind in kinds:
        try:
            created = typed(kind.create(), "create response")
            if created.metadata.name != kind.name:
                raise AssertionError(f"created {created.metadata.name}, wanted {kind.name}")
            if kind.resource == "namespaces":
                for w in watchers:
                    w.start()
            print(f"  ok {kind.label()} {kind.name}", flush=True)
        except Exception as e:  # noqa: BLE001
            fail(f"{kind.label()} create", e)
    print("as created:", flush=True)
    decode_everything(kinds, "as created")
    print("controllers:", flush=True)
    wait_for_controllers(kinds)
    print("after the controllers acted:", flush=True)
    decode_everything([k for k in kinds if k.resource in WORKLOADS], "after controllers")
    # The watches ran while the controllers acted; what they decoded so far
    # is the result (their threads end with their server-side timeout).
    for w in watchers:
        label = w.kind.label()
        if w.ident is None:
            fail(f"{label} watch during controllers", AssertionError("never started"))
        elif w.error is not None:
            fail(f"{label} watch during controllers", w.error)
        else:
            print(f"  ok {label} watched while controllers acted: {dict(w.counts)}", flush=True)
    # Also the nodes the agents registered, and the pods the controllers made.
    try:
        core = client.CoreV1Api(api_client)
        nodes = [typed(n, "node") for n in core.list_node().items]
        pods = [typed(p, "pod") for p in core.list_namespaced_pod(NS).items]
        print(f"  ok {len(nodes)} nodes and {len(pods)} pods decoded", flush=True)
    except Exception as e:  # noqa: BLE001
        fail("nodes and pods", e)
    cleanup(kinds)
    if failures:
        print(f"\n{len(failures)} FAILURES:")
        for f in failures:
            print(f"  {f}")
        return 1
    print(f"\nall {len(kinds)} served kinds decoded")
    return 0


def cleanup(kinds):
    """Cluster-scoped objects go (the fake node above all); the namespace
    takes the rest with it."""
    for kind in kinds:
        if kind.namespaced:
            continue
        try:
            getattr(kind.api, f"delete_{kind.suffix}")(kind.name)
        except Exception:  # noqa: BLE001 - best effort
            traceback.print_exc(limit=1)


if __name__ == "__main__":
    sys.exit(main())
