"""Generates schema.rs, keel's protobuf schema table for the Kubernetes types it decodes.

The table comes from the Kubernetes Go API types: for every struct field, the
`protobuf:"..."` tag gives the field number, the `json:"..."` tag the JSON name and
`omitempty`, and the Go type the value type and whether it is a pointer. Every field
is checked against the published generated.proto (number, scalar/message type,
repeated/map), so a mistake in either source stops the run.

Inputs, one directory holding files taken from k8s.io/api and k8s.io/apimachinery
at the release keel serves (v0.33.x):

    for p in core/v1 apps/v1 batch/v1 policy/v1 networking/v1 coordination/v1 \
             autoscaling/v1 autoscaling/v2 discovery/v1 events/v1; do
      n=$(echo $p | tr / _)
      git -C api show v0.33.9:$p/types.go > $DIR/${n}_types.go
      git -C api show v0.33.9:$p/generated.proto > $DIR/$n.proto
    done
    git -C apimachinery show v0.33.9:pkg/apis/meta/v1/types.go > $DIR/meta_v1_types.go
    git -C apimachinery show v0.33.9:pkg/apis/meta/v1/generated.proto > $DIR/pkg_apis_meta_v1.proto

Run:  python3 gen_schema.py $DIR [K8S_OPENAPI_SRC] > schema.rs
With K8S_OPENAPI_SRC (e.g. ~/.cargo/registry/src/*/k8s-openapi-0.29.0/src/v1_33) it also
checks that every message's JSON field names are exactly those of the k8s-openapi struct.
"""
import re, sys, collections
UP = sys.argv[1]
FILES = {  # pkg key -> (file, import path)
 'core': ('core_v1_types.go', 'k8s.io/api/core/v1'),
 'apps': ('apps_v1_types.go', 'k8s.io/api/apps/v1'),
 'batch': ('batch_v1_types.go', 'k8s.io/api/batch/v1'),
 'policy': ('policy_v1_types.go', 'k8s.io/api/policy/v1'),
 'networking': ('networking_v1_types.go', 'k8s.io/api/networking/v1'),
 'coordination': ('coordination_v1_types.go', 'k8s.io/api/coordination/v1'),
 'autoscalingv1': ('autoscaling_v1_types.go', 'k8s.io/api/autoscaling/v1'),
 'autoscalingv2': ('autoscaling_v2_types.go', 'k8s.io/api/autoscaling/v2'),
 'discovery': ('discovery_v1_types.go', 'k8s.io/api/discovery/v1'),
 'events': ('events_v1_types.go', 'k8s.io/api/events/v1'),
 'meta': ('meta_v1_types.go', 'k8s.io/apimachinery/pkg/apis/meta/v1'),
}
PATH2PKG = {v[1]: k for k, v in FILES.items()}
SPECIAL = {  # (import path, name) -> Ty; Duration and RawExtension are not reachable
            # from ROOTS today, and mod.rs's Ty has no variant for them yet
 ('k8s.io/apimachinery/pkg/apis/meta/v1', 'Time'): 'Time',
 ('k8s.io/apimachinery/pkg/apis/meta/v1', 'MicroTime'): 'MicroTime',
 ('k8s.io/apimachinery/pkg/apis/meta/v1', 'Duration'): 'Duration',
 ('k8s.io/apimachinery/pkg/apis/meta/v1', 'FieldsV1'): 'FieldsV1',
 ('k8s.io/apimachinery/pkg/util/intstr', 'IntOrString'): 'IntOrStr',
 ('k8s.io/apimachinery/pkg/api/resource', 'Quantity'): 'Quantity',
 ('k8s.io/apimachinery/pkg/runtime', 'RawExtension'): 'RawExt',
 ('k8s.io/apimachinery/pkg/types', 'UID'): 'Str',
 ('k8s.io/apimachinery/pkg/types', 'NodeName'): 'Str',
}
BASIC = {'string': 'Str', 'int32': 'I32', 'int64': 'I64', 'bool': 'Bool', 'float64': 'F64', 'int': 'I64'}
ROOTS = [
 ('v1', 'core', ['ConfigMap', 'Secret', 'Namespace', 'ServiceAccount', 'Service', 'Pod', 'ResourceQuota',
                 'Endpoints', 'PersistentVolumeClaim', 'PersistentVolume', 'LimitRange', 'Event', 'Node',
                 'Binding']),
 ('apps/v1', 'apps', ['Deployment', 'ReplicaSet', 'StatefulSet', 'DaemonSet']),
 ('batch/v1', 'batch', ['Job', 'CronJob']),
 ('policy/v1', 'policy', ['PodDisruptionBudget', 'Eviction']),
 ('networking.k8s.io/v1', 'networking', ['Ingress', 'NetworkPolicy']),
 ('coordination.k8s.io/v1', 'coordination', ['Lease']),
 ('autoscaling/v1', 'autoscalingv1', ['HorizontalPodAutoscaler', 'Scale']),
 ('autoscaling/v2', 'autoscalingv2', ['HorizontalPodAutoscaler']),
 ('discovery.k8s.io/v1', 'discovery', ['EndpointSlice']),
 ('events.k8s.io/v1', 'events', ['Event']),
 ('', 'meta', ['DeleteOptions']),
]

structs = {}   # (pkg, name) -> [(fieldname or None, gotype, tags)]
aliases = {}   # (pkg, name) -> gotype
imports = {}   # pkg -> alias -> import path
for pkg, (fn, ipath) in FILES.items():
    src = open(f'{UP}/{fn}').read()
    src = re.sub(r'/\*.*?\*/', '', src, flags=re.S)
    imp = {}
    m = re.search(r'^import \((.*?)^\)', src, re.S | re.M)
    for line in (m.group(1).splitlines() if m else []):
        mm = re.match(r'\s*(\w+)?\s*"([^"]+)"', line)
        if mm:
            imp[mm.group(1) or mm.group(2).split('/')[-1]] = mm.group(2)
    imports[pkg] = imp
    cur = None
    for line in src.splitlines():
        if cur is not None:
            if line.startswith('}'):
                cur = None
                continue
            s = line.strip()
            if not s or s.startswith('//'):
                continue
            mm = re.match(r'^(\w+)\s+(\S+)\s+`(.*)`', s)
            if mm:
                structs[(pkg, cur)].append((mm.group(1), mm.group(2), mm.group(3)))
                continue
            mm = re.match(r'^(\S+)\s+`(.*)`', s)
            if mm:
                structs[(pkg, cur)].append((None, mm.group(1), mm.group(2)))
                continue
            mm = re.match(r'^(\S+)$', s)
            if mm:
                structs[(pkg, cur)].append((None, mm.group(1), ''))
                continue
            raise SystemExit(f'unparsed field line in {pkg}.{cur}: {line!r}')
        mm = re.match(r'^type (\w+) struct \{\s*$', line)
        if mm:
            cur = mm.group(1)
            structs[(pkg, cur)] = []
            continue
        mm = re.match(r'^type (\w+) struct\{\}', line)
        if mm:
            structs[(pkg, mm.group(1))] = []
            continue
        mm = re.match(r'^type (\w+) (\S+)\s*(//.*)?$', line)
        if mm:
            aliases[(pkg, mm.group(1))] = mm.group(2)

def tag(tags, key):
    m = re.search(key + r':"([^"]*)"', tags)
    return m.group(1) if m else None

def rust_name(pkg, name):
    s = re.sub(r'(?<=[a-z0-9])([A-Z])', r'_\1', name)
    s = re.sub(r'(?<=[A-Z])([A-Z][a-z])', r'_\1', s)
    return f'{pkg.upper()}_{s.upper()}'

needed = collections.OrderedDict()
def need(pkg, name):
    if (pkg, name) not in needed:
        needed[(pkg, name)] = None
        needed[(pkg, name)] = gen_struct(pkg, name)
    return rust_name(pkg, name)

def resolve(pkg, t):
    """Go type expr -> a Rust Ty expression, ('rep', element Ty) or ('map', value Ty)."""
    if t == '[]byte':
        return 'Bytes'
    if t.startswith('[]'):
        return ('rep', resolve(pkg, t[2:]))
    if t.startswith('map['):
        k, v = re.match(r'map\[([^\]]+)\](.*)', t).groups()
        kt = resolve(pkg, k)
        assert kt == 'Str', (pkg, t)
        vt = resolve(pkg, v)
        assert isinstance(vt, str), (pkg, t)
        return ('map', vt)
    if t.startswith('*'):
        raise SystemExit(f'nested pointer {t} in {pkg}')
    if t in BASIC:
        return BASIC[t]
    if '.' in t:
        a, n = t.split('.')
        ipath = imports[pkg][a]
        if (ipath, n) in SPECIAL:
            return SPECIAL[(ipath, n)]
        if ipath not in PATH2PKG:
            raise SystemExit(f'unknown package {ipath} for {t}')
        return resolve(PATH2PKG[ipath], n)
    if pkg == 'meta' and (FILES['meta'][1], t) in SPECIAL:
        return SPECIAL[(FILES['meta'][1], t)]
    if (pkg, t) in structs:
        return f'Msg(&{need(pkg, t)})'
    if (pkg, t) in aliases:
        return resolve(pkg, aliases[(pkg, t)])
    raise SystemExit(f'unknown type {pkg}.{t}')

PROTO = {}  # (pkg, message) -> {field name: (label, type, number)}
PROTO_FILES = {'core': 'core_v1', 'apps': 'apps_v1', 'batch': 'batch_v1', 'policy': 'policy_v1',
  'networking': 'networking_v1', 'coordination': 'coordination_v1', 'autoscalingv1': 'autoscaling_v1',
  'autoscalingv2': 'autoscaling_v2', 'discovery': 'discovery_v1', 'events': 'events_v1', 'meta': 'pkg_apis_meta_v1'}
for pkg, fn in PROTO_FILES.items():
    src = open(f'{UP}/{fn}.proto').read()
    for m in re.finditer(r'^message (\w+) \{(.*?)^\}', src, re.S | re.M):
        fields = {}
        for fm in re.finditer(r'^\s*(optional|repeated|map<[^>]+>)\s*(\S+)?\s+(\w+) = (\d+);', m.group(2), re.M):
            label, typ, fname, num = fm.groups()
            if label.startswith('map'):
                label, typ = 'map', label
            fields[fname] = (label, typ, int(num))
        PROTO[(pkg, m.group(1))] = fields
checked = [0]
def check_proto(pkg, msg, gofield, pname, num, ty, rule):
    f = PROTO[(pkg, msg)].get(pname)
    if f is None:
        raise SystemExit(f'proto field missing {pkg}.{msg}.{pname}')
    label, typ, pnum = f
    short = typ.split('.')[-1].rstrip('>')
    exp = {'string': 'Str', 'int32': 'I32', 'int64': 'I64', 'bool': 'Bool', 'double': 'F64', 'bytes': 'Bytes',
           'Time': 'Time', 'MicroTime': 'MicroTime', 'Duration': 'Duration', 'IntOrString': 'IntOrStr',
           'Quantity': 'Quantity', 'RawExtension': 'RawExt', 'FieldsV1': 'FieldsV1'}.get(short, f'Msg(&')
    got = ty
    if label == 'map':
        v = typ[4:-1].split(',')[1].strip().split('.')[-1]
        exp = 'Map(&' + {'string': 'Str', 'bytes': 'Bytes', 'Quantity': 'Quantity', 'Time': 'Time'}.get(v, 'Msg(&')
        assert rule == 'Rep' and ty.startswith('Map'), (pkg, msg, pname)
    elif label == 'repeated':
        assert rule == 'Rep' and not ty.startswith('Map'), (pkg, msg, pname)
    else:
        assert rule != 'Rep', (pkg, msg, pname)
    if pnum != num or not got.startswith(exp):
        raise SystemExit(f'proto mismatch {pkg}.{msg}.{pname}: proto {label} {typ} = {pnum}; table {ty} {rule} = {num}')
    if exp == 'Msg(&' and not got.endswith('_' + rust_name('x', short)[2:] + ')'):
        raise SystemExit(f'proto msg mismatch {pkg}.{msg}.{pname}: proto {typ}; table {ty}')
    checked[0] += 1

def gen_struct(pkg, name):
    out = []
    for fname, gt, tags in structs[(pkg, name)]:
        pb = tag(tags, 'protobuf')
        js = tag(tags, 'json')
        if pb is None:
            if js is not None and js.split(',')[0] == '-':
                continue
            if gt in ('metav1.TypeMeta', 'TypeMeta'):
                continue
            raise SystemExit(f'field without protobuf tag {pkg}.{name}.{fname} {gt} {tags}')
        parts = pb.split(',')
        num = int(parts[1])
        jparts = (js or '').split(',')
        jname = jparts[0]
        omit = 'omitempty' in jparts[1:] or 'omitzero' in jparts[1:]
        ptr = gt.startswith('*')
        r = resolve(pkg, gt.lstrip('*'))
        if isinstance(r, tuple) and r[0] == 'rep':
            assert not ptr, (pkg, name, fname)
            ty, rule = r[1], 'Rep'
            assert isinstance(ty, str)
        elif isinstance(r, tuple) and r[0] == 'map':
            assert not ptr, (pkg, name, fname)
            ty, rule = f'Map(&{r[1]})', 'Rep'
        else:
            ty = r
            if jname == '' and fname is None:
                assert ty.startswith('Msg('), (pkg, name, fname)
                rule = 'Inline'
            elif ptr:
                rule = 'Ptr'
            elif omit:
                rule = 'Opt'
            else:
                rule = 'Req'
        pname = ([x[5:] for x in parts if x.startswith('name=')] or [gt[0].lower() + gt[1:]])[0]
        check_proto(pkg, name, fname, pname, num, ty, rule)
        out.append((num, jname, ty, rule))
    return out

roots = []
for gv, pkg, kinds in ROOTS:
    for k in kinds:
        roots.append((gv, k, need(pkg, k)))

lines = [
    '// @generated by gen_schema.py from the Kubernetes v1.33 Go API types',
    '// (k8s.io/api and k8s.io/apimachinery v0.33.9); do not edit by hand.',
    '//',
    '// One line per field: f(field number, JSON name, value type, emission rule).',
    '',
    'use super::{f, Message, Rule::*, Ty::*};',
    '',
    '/// (apiVersion, kind) -> top-level message. An empty apiVersion matches any.',
    'pub(super) static ROOTS: &[(&str, &str, &Message)] = &[',
]
for gv, k, rn in roots:
    lines.append(f'    ("{gv}", "{k}", &{rn}),')
lines.append('];')
for (pkg, name), fields in needed.items():
    lines.append('')
    lines.append(f'pub(super) static {rust_name(pkg, name)}: Message = Message("{name}", &[')
    for num, jn, ty, rule in sorted(fields):
        lines.append(f'    f({num}, "{jn}", {ty}, {rule}),')
    lines.append(']);')
print('\n'.join(lines))
print(f'proto-checked={checked[0]} messages={len(needed)} fields={sum(len(v) for v in needed.values())}', file=sys.stderr)

if len(sys.argv) > 2:
    import os
    K = sys.argv[2]
    DIRS = {'core': 'api/core/v1', 'apps': 'api/apps/v1', 'batch': 'api/batch/v1', 'policy': 'api/policy/v1',
            'networking': 'api/networking/v1', 'coordination': 'api/coordination/v1',
            'autoscalingv1': 'api/autoscaling/v1', 'autoscalingv2': 'api/autoscaling/v2',
            'discovery': 'api/discovery/v1', 'events': 'api/events/v1', 'meta': 'apimachinery/pkg/apis/meta/v1'}
    def json_names(pkg, name):
        out = set()
        for num, jn, ty, rule in needed[(pkg, name)]:
            if rule == 'Inline':
                inner = [k for k in needed if rust_name(*k) == ty[5:-1]][0]
                out |= json_names(*inner)
            else:
                out.add(jn)
        return out
    files = 0
    for (pkg, name) in needed:
        fn = re.sub(r'(?<=[a-z0-9])([A-Z])', r'_\1', name)
        fn = re.sub(r'(?<=[A-Z])([A-Z][a-z])', r'_\1', fn).lower()
        path = f'{K}/{DIRS[pkg]}/{fn}.rs'
        if not os.path.exists(path):
            continue  # an embedded struct, checked within its parent
        files += 1
        theirs = set(re.findall(r'"(\w+)" => Field::Key_', open(path).read()))
        mine = json_names(pkg, name)
        theirs -= {'apiVersion', 'kind'} - mine  # a top-level object's type meta
        if mine != theirs:
            raise SystemExit(f'{pkg}.{name}: schema has {sorted(mine - theirs)}, k8s-openapi has {sorted(theirs - mine)}')
    print(f'k8s-openapi: {files} structs match', file=sys.stderr)
