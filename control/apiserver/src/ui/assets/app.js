// The keel dashboard: plain JavaScript, no build step, no dependencies.
//
// Every byte of cluster data comes from the ordinary Kubernetes API with
// the viewer's own credentials (a bearer token kept in sessionStorage, or
// the browser's client certificate), so RBAC decides what shows: a list
// the viewer may not make is reported as not permitted. Each resource is
// listed once and then followed with a `?watch=1` stream read through
// fetch, so the page updates live without reloads; a stream that ends is
// resumed from its last resourceVersion and a 410 Gone relists. The raft
// status (which has no Kubernetes resource) is polled from /ui/api/raft.
// Object text is only ever set as textContent, never parsed as HTML.
'use strict';
(function () {
  const TOKEN_KEY = 'keel-dashboard-token';
  const RAFT_POLL_MS = 2000;
  const RENDER_DELAY_MS = 100;
  const EVENTS_SHOWN = 20;

  const SOURCES = [
    { key: 'nodes', path: '/api/v1/nodes', what: 'nodes' },
    { key: 'pods', path: '/api/v1/pods', what: 'pods in all namespaces' },
    { key: 'deployments', path: '/apis/apps/v1/deployments', what: 'deployments' },
    { key: 'statefulsets', path: '/apis/apps/v1/statefulsets', what: 'statefulsets' },
    { key: 'daemonsets', path: '/apis/apps/v1/daemonsets', what: 'daemonsets' },
    { key: 'events', path: '/api/v1/events', what: 'events' },
  ];

  const state = {
    objects: {}, // source key -> Map(namespace/name -> object)
    denied: {}, // source key -> message, when RBAC refuses the list
    streaming: {}, // source key -> whether its watch is open
    raft: null,
    raftDenied: null,
    raftError: null,
  };
  let generation = 0; // bumped on log out: stale loops stop
  const controllers = new Set();
  let renderTimer = null;

  const $ = (sel) => document.querySelector(sel);

  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function headers(extra) {
    const h = Object.assign({ Accept: 'application/json' }, extra || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) h.Authorization = 'Bearer ' + token;
    return h;
  }

  async function httpError(resp) {
    let message = resp.statusText;
    try {
      const body = await resp.json();
      if (body && body.message) message = body.message;
    } catch (_) { /* not a Status */ }
    return new HttpError(resp.status, message);
  }

  async function getJSON(path, signal) {
    const resp = await fetch(path, { headers: headers(), credentials: 'same-origin', signal });
    if (!resp.ok) throw await httpError(resp);
    return resp.json();
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const keyOf = (o) => (o.metadata.namespace ? o.metadata.namespace + '/' : '') + o.metadata.name;

  // ---- authentication ----

  // Who the API says we are; null when it answers 401 (or anonymous).
  async function whoAmI() {
    const resp = await fetch('/apis/authentication.k8s.io/v1/selfsubjectreviews', {
      method: 'POST',
      credentials: 'same-origin',
      headers: headers({ 'Content-Type': 'application/json' }),
      body: JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' }),
    });
    if (resp.status === 401) return null;
    if (!resp.ok) return '(unknown user)';
    const v = await resp.json();
    const name = v && v.status && v.status.userInfo && v.status.userInfo.username;
    if (name === 'system:anonymous') return null;
    return name || '(unknown user)';
  }

  function showLogin(message) {
    stopAll();
    $('#dash').hidden = true;
    $('#logout').hidden = true;
    $('#who').textContent = '';
    $('#login').hidden = false;
    $('#login-error').textContent = message || '';
    setLive(false);
    $('#token').focus();
  }

  async function showDashboard(user) {
    $('#login').hidden = true;
    $('#dash').hidden = false;
    $('#who').textContent = user;
    $('#logout').hidden = !sessionStorage.getItem(TOKEN_KEY);
    const gen = ++generation;
    for (const src of SOURCES) follow(src, gen);
    pollRaft(gen);
    render();
  }

  async function login(ev) {
    ev.preventDefault();
    const token = $('#token').value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('#token').value = '';
    let user;
    try {
      user = await whoAmI();
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      return showLogin('cannot reach the API: ' + e.message);
    }
    if (!user) {
      sessionStorage.removeItem(TOKEN_KEY);
      return showLogin('the API refused this token (401 Unauthorized)');
    }
    showDashboard(user);
  }

  function logout() {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin('logged out');
  }

  function unauthorized() {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin('the API no longer accepts these credentials (401); log in again');
  }

  function stopAll() {
    generation++;
    for (const c of controllers) c.abort();
    controllers.clear();
    for (const src of SOURCES) {
      state.objects[src.key] = new Map();
      state.streaming[src.key] = false;
    }
    state.denied = {};
    state.raft = null;
  }

  // ---- list + watch ----

  async function follow(src, gen) {
    let rv = null;
    while (gen === generation) {
      const ctl = new AbortController();
      controllers.add(ctl);
      try {
        if (rv === null) {
          const list = await getJSON(src.path, ctl.signal);
          const items = new Map();
          for (const o of list.items || []) items.set(keyOf(o), o);
          if (gen !== generation) return;
          state.objects[src.key] = items;
          delete state.denied[src.key];
          rv = list.metadata.resourceVersion;
          schedule();
        }
        rv = await watch(src, rv, gen, ctl);
      } catch (e) {
        if (gen !== generation) return;
        state.streaming[src.key] = false;
        schedule();
        if (e.status === 401) return unauthorized();
        if (e.status === 403) {
          state.denied[src.key] = e.message;
          state.objects[src.key] = new Map();
          schedule();
          rv = null;
          await sleep(30000); // permissions may be granted later
          continue;
        }
        await sleep(1000);
        rv = null; // relist after an error: the cheapest correct resync
      } finally {
        controllers.delete(ctl);
      }
    }
  }

  // Follows one watch stream; returns the resourceVersion to resume from,
  // or null when the server says it is too old (410) and a relist is due.
  async function watch(src, rv, gen, ctl) {
    const url = src.path + '?watch=1&allowWatchBookmarks=true&timeoutSeconds=240&resourceVersion=' +
      encodeURIComponent(rv);
    const resp = await fetch(url, { headers: headers(), credentials: 'same-origin', signal: ctl.signal });
    if (!resp.ok) throw await httpError(resp);
    state.streaming[src.key] = true;
    schedule();
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done || gen !== generation) {
        state.streaming[src.key] = false;
        return rv;
      }
      buf += value;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        const ev = JSON.parse(line);
        const o = ev.object || {};
        if (ev.type === 'ERROR') {
          if (o.code === 410) return null;
          throw new HttpError(o.code || 500, o.message || 'watch error');
        }
        if (o.metadata && o.metadata.resourceVersion) rv = o.metadata.resourceVersion;
        if (ev.type === 'BOOKMARK') continue;
        const items = state.objects[src.key];
        if (ev.type === 'DELETED') items.delete(keyOf(o));
        else items.set(keyOf(o), o);
        schedule();
      }
    }
  }

  async function pollRaft(gen) {
    while (gen === generation) {
      try {
        state.raft = await getJSON('/ui/api/raft');
        state.raftDenied = null;
        state.raftError = null;
      } catch (e) {
        if (gen !== generation) return;
        if (e.status === 401) return unauthorized();
        if (e.status === 403) state.raftDenied = e.message;
        else state.raftError = e.message;
        state.raft = null;
      }
      schedule();
      await sleep(RAFT_POLL_MS);
    }
  }

  // ---- quantities and small helpers ----

  const SUFFIX = {
    n: 1e-9, u: 1e-6, m: 1e-3, '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
    Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
  };

  // A Kubernetes resource.Quantity as a number (cores, bytes, count).
  function quantity(q) {
    if (q === undefined || q === null) return 0;
    const m = /^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$/.exec(String(q).trim());
    return m ? parseFloat(m[1]) * SUFFIX[m[2] || ''] : 0;
  }

  function cpuText(cores) {
    if (cores === 0) return '0';
    return cores < 1 ? Math.round(cores * 1000) + 'm' : (Math.round(cores * 100) / 100).toString();
  }

  function bytesText(b) {
    if (b >= 2 ** 30) return (Math.round((b / 2 ** 30) * 10) / 10) + 'Gi';
    if (b >= 2 ** 20) return Math.round(b / 2 ** 20) + 'Mi';
    if (b >= 2 ** 10) return Math.round(b / 2 ** 10) + 'Ki';
    return String(b);
  }

  function age(ts) {
    if (!ts) return '';
    const s = Math.max(0, Math.floor((Date.now() - Date.parse(ts)) / 1000));
    if (s < 120) return s + 's';
    if (s < 7200) return Math.floor(s / 60) + 'm';
    if (s < 172800) return Math.floor(s / 3600) + 'h';
    return Math.floor(s / 86400) + 'd';
  }

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('data-')) e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  const badge = (text, tone) => el('span', { class: 'badge ' + tone, text });
  const values = (key) => Array.from((state.objects[key] || new Map()).values());

  // A pod's requests as the scheduler counts them: the larger of its
  // containers' sum and its largest init container.
  function podRequests(pod) {
    const sum = (cs, r) => (cs || []).reduce((a, c) => a + quantity(((c.resources || {}).requests || {})[r]), 0);
    const max = (cs, r) => (cs || []).reduce((a, c) => Math.max(a, quantity(((c.resources || {}).requests || {})[r])), 0);
    const spec = pod.spec || {};
    return {
      cpu: Math.max(sum(spec.containers, 'cpu'), max(spec.initContainers, 'cpu')),
      memory: Math.max(sum(spec.containers, 'memory'), max(spec.initContainers, 'memory')),
    };
  }

  const terminated = (pod) => ['Succeeded', 'Failed'].includes((pod.status || {}).phase);

  function selects(selector, labels) {
    if (!selector) return false;
    labels = labels || {};
    for (const [k, v] of Object.entries(selector.matchLabels || {})) if (labels[k] !== v) return false;
    for (const e of selector.matchExpressions || []) {
      const has = Object.prototype.hasOwnProperty.call(labels, e.key);
      const vals = e.values || [];
      if (e.operator === 'In' && !(has && vals.includes(labels[e.key]))) return false;
      if (e.operator === 'NotIn' && has && vals.includes(labels[e.key])) return false;
      if (e.operator === 'Exists' && !has) return false;
      if (e.operator === 'DoesNotExist' && has) return false;
    }
    return Object.keys(selector.matchLabels || {}).length + (selector.matchExpressions || []).length > 0;
  }

  // ---- rollout state ----

  // [tone, text] as `kubectl rollout status` would judge it.
  function rollout(kind, o) {
    const s = o.status || {};
    const spec = o.spec || {};
    if ((o.metadata.generation || 0) > (s.observedGeneration || 0)) return ['warn', 'waiting for controller'];
    if (kind === 'Deployment') {
      const want = spec.replicas === undefined ? 1 : spec.replicas;
      const cond = (s.conditions || []).find((c) => c.type === 'Progressing');
      if (cond && cond.reason === 'ProgressDeadlineExceeded') return ['bad', 'failed: progress deadline exceeded'];
      if (spec.paused) return ['muted', 'paused'];
      const updated = s.updatedReplicas || 0;
      const total = s.replicas || 0;
      const available = s.availableReplicas || 0;
      if (updated < want) return ['warn', `rolling out: ${updated} of ${want} updated`];
      if (total > updated) return ['warn', `rolling out: ${total - updated} old pending termination`];
      if (available < updated) return ['warn', `rolling out: ${available} of ${updated} available`];
      return ['ok', 'complete'];
    }
    if (kind === 'StatefulSet') {
      const want = spec.replicas === undefined ? 1 : spec.replicas;
      const ready = s.readyReplicas || 0;
      if (s.updateRevision && s.currentRevision && s.updateRevision !== s.currentRevision &&
        (s.updatedReplicas || 0) < want) {
        return ['warn', `rolling out: ${s.updatedReplicas || 0} of ${want} updated`];
      }
      if (ready < want) return ['warn', `rolling out: ${ready} of ${want} ready`];
      return ['ok', 'complete'];
    }
    const desired = s.desiredNumberScheduled || 0;
    const updated = s.updatedNumberScheduled === undefined ? desired : s.updatedNumberScheduled;
    const available = s.numberAvailable || 0;
    if (updated < desired) return ['warn', `rolling out: ${updated} of ${desired} updated`];
    if (available < desired) return ['warn', `rolling out: ${available} of ${desired} available`];
    return ['ok', 'complete'];
  }

  function readyText(kind, o) {
    const s = o.status || {};
    if (kind === 'DaemonSet') return `${s.numberReady || 0}/${s.desiredNumberScheduled || 0}`;
    const want = (o.spec || {}).replicas === undefined ? 1 : o.spec.replicas;
    return `${s.readyReplicas || 0}/${want}`;
  }

  // ---- rendering ----

  function schedule() {
    if (renderTimer === null) renderTimer = setTimeout(render, RENDER_DELAY_MS);
  }

  function fill(tbody, rows, columns, emptyText) {
    tbody.replaceChildren(...(rows.length ? rows
      : [el('tr', { class: 'empty' }, el('td', { colSpan: columns, text: emptyText }))]));
  }

  function note(id, keys) {
    const denied = keys.filter((k) => state.denied[k]);
    const n = $(id);
    n.className = denied.length ? 'note denied' : 'note';
    n.textContent = denied.map((k) => {
      const src = SOURCES.find((s) => s.key === k);
      return `Not permitted to list ${src.what}: ${state.denied[k]}`;
    }).join(' · ');
  }

  function meter(used, total, text) {
    const pct = total > 0 ? Math.min(100, (used / total) * 100) : 0;
    const tone = pct >= 100 ? ' full' : pct >= 80 ? ' high' : '';
    return el('div', { class: 'meter', title: total > 0 ? `${Math.round(pct)}% of allocatable` : '' },
      el('div', { class: 'bar' }, el('div', { class: 'fill' + tone, style: `width:${pct.toFixed(1)}%` })),
      el('span', { class: 'text', text }));
  }

  function renderNodes(pods) {
    const byNode = new Map();
    for (const p of pods) {
      const node = (p.spec || {}).nodeName;
      if (!node || terminated(p)) continue;
      const acc = byNode.get(node) || { cpu: 0, memory: 0, pods: 0 };
      const r = podRequests(p);
      acc.cpu += r.cpu;
      acc.memory += r.memory;
      acc.pods += 1;
      byNode.set(node, acc);
    }
    const nodes = values('nodes').sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
    const rows = nodes.map((n) => {
      const s = n.status || {};
      const ready = (s.conditions || []).find((c) => c.type === 'Ready');
      const isReady = !!ready && ready.status === 'True';
      const cordoned = !!(n.spec || {}).unschedulable;
      const alloc = s.allocatable || s.capacity || {};
      const used = byNode.get(n.metadata.name) || { cpu: 0, memory: 0, pods: 0 };
      const cpu = quantity(alloc.cpu);
      const mem = quantity(alloc.memory);
      const podCap = quantity(alloc.pods);
      const capacity = s.capacity || {};
      return el('tr', { 'data-name': n.metadata.name, 'data-ready': String(isReady) },
        el('td', { class: 'mono', text: n.metadata.name }),
        el('td', {},
          badge(isReady ? 'Ready' : (ready ? (ready.reason || 'NotReady') : 'Unknown'), isReady ? 'ok' : 'bad'),
          cordoned ? ' ' : null, cordoned ? badge('cordoned', 'warn') : null),
        el('td', { title: `capacity ${capacity.cpu || '?'}` },
          meter(used.cpu, cpu, `${cpuText(used.cpu)} / ${cpuText(cpu)}`)),
        el('td', { title: `capacity ${capacity.memory || '?'}` },
          meter(used.memory, mem, `${bytesText(used.memory)} / ${bytesText(mem)}`)),
        el('td', { class: 'num', text: `${used.pods} / ${podCap || '?'}` }),
        el('td', { class: 'mono', text: ((s.nodeInfo || {}).kubeletVersion) || '' }),
        el('td', { class: 'num', text: age(n.metadata.creationTimestamp) }));
    });
    fill($('#nodes tbody'), rows, 7, state.denied.nodes ? 'not permitted' : 'no nodes yet');
    note('#nodes-note', ['nodes', 'pods']);
    return nodes;
  }

  function phaseChips(pods) {
    const counts = {};
    for (const p of pods) {
      const phase = p.metadata.deletionTimestamp ? 'Terminating' : ((p.status || {}).phase || 'Pending');
      counts[phase] = (counts[phase] || 0) + 1;
    }
    const tone = { Running: 'ok', Succeeded: 'info', Pending: 'warn', Terminating: 'muted', Failed: 'bad', Unknown: 'bad' };
    const order = ['Running', 'Pending', 'Terminating', 'Succeeded', 'Failed', 'Unknown'];
    const chips = el('span', { class: 'chips' });
    for (const phase of order) if (counts[phase]) chips.append(badge(`${phase} ${counts[phase]}`, tone[phase]));
    if (!pods.length) chips.append(el('span', { class: 'note', text: 'no pods' }));
    return chips;
  }

  function renderWorkloads(pods) {
    const kinds = [['Deployment', 'deployments'], ['StatefulSet', 'statefulsets'], ['DaemonSet', 'daemonsets']];
    const all = [];
    for (const [kind, key] of kinds) for (const o of values(key)) all.push([kind, o]);
    all.sort((a, b) => keyOf(a[1]).localeCompare(keyOf(b[1])) || a[0].localeCompare(b[0]));
    let complete = 0;
    const rows = all.map(([kind, o]) => {
      const [tone, text] = rollout(kind, o);
      if (tone === 'ok') complete++;
      const ns = o.metadata.namespace;
      const mine = pods.filter((p) => p.metadata.namespace === ns && selects((o.spec || {}).selector, p.metadata.labels));
      const images = (((o.spec || {}).template || {}).spec || {}).containers || [];
      return el('tr', {
        'data-kind': kind, 'data-namespace': ns, 'data-name': o.metadata.name,
        'data-rollout': tone === 'ok' ? 'complete' : tone === 'bad' ? 'failed' : 'progressing',
      },
      el('td', { text: kind }),
      el('td', { text: ns }),
      el('td', { class: 'mono', text: o.metadata.name }),
      el('td', { class: 'num', text: readyText(kind, o) }),
      el('td', { class: 'rollout' }, badge(text, tone)),
      el('td', {}, phaseChips(mine)),
      el('td', { class: 'mono images', text: images.map((c) => c.image).join(', ') }),
      el('td', { class: 'num', text: age(o.metadata.creationTimestamp) }));
    });
    fill($('#workloads tbody'), rows, 8,
      ['deployments', 'statefulsets', 'daemonsets'].every((k) => state.denied[k]) ? 'not permitted' : 'no workloads');
    note('#workloads-note', ['deployments', 'statefulsets', 'daemonsets', 'pods']);
    return [complete, all.length];
  }

  function renderRaft() {
    const r = state.raft;
    const facts = $('#raft-facts');
    const noteEl = $('#raft-note');
    noteEl.className = 'note';
    if (!r) {
      facts.textContent = '';
      fill($('#raft tbody'), [], 6, state.raftDenied ? 'not permitted' : 'loading…');
      if (state.raftDenied) {
        noteEl.className = 'note denied';
        noteEl.textContent = 'Not permitted: the raft status needs get on the non-resource URL /ui/api/raft. ' +
          state.raftDenied;
      } else {
        noteEl.textContent = state.raftError || '';
      }
      return null;
    }
    const leader = r.members.find((m) => m.role === 'leader');
    facts.replaceChildren('term ', el('b', { text: String(r.term) }),
      ' · leader ', el('b', { text: leader ? leader.name : 'none (election)' }),
      ' · revision ', el('b', { text: String(r.revision) }),
      ' · commit ', el('b', { text: r.committedIndex === null ? '?' : String(r.committedIndex) }));
    const rows = r.members.map((m) => el('tr', { 'data-id': m.id, 'data-role': m.role },
      el('td', { class: 'mono', title: m.peerURL, text: m.name + (m.self ? ' (this API)' : '') }),
      el('td', { class: 'mono', text: m.id }),
      el('td', {}, badge(m.role, m.role === 'leader' ? 'info' : m.role === 'learner' ? 'muted' : 'ok')),
      el('td', { class: 'num', text: m.matchedIndex === null ? '—' : String(m.matchedIndex) }),
      el('td', { class: 'num' }, m.lag === null ? '—' : badge(String(m.lag), m.lag > 100 ? 'warn' : 'ok')),
      el('td', { class: 'num', text: m.appliedIndex === null ? '—' : String(m.appliedIndex) })));
    fill($('#raft tbody'), rows, 6, 'no members');
    noteEl.textContent = r.lagKnown ? ''
      : 'Lag is tracked by the leader; this API replica is a follower, so only its own applied index is shown.';
    return r;
  }

  function eventTime(e) {
    return e.lastTimestamp || e.eventTime || (e.series || {}).lastObservedTime || e.firstTimestamp ||
      e.metadata.creationTimestamp;
  }

  function renderEvents() {
    const events = values('events')
      .map((e) => [Date.parse(eventTime(e)) || 0, e])
      .sort((a, b) => b[0] - a[0])
      .slice(0, EVENTS_SHOWN)
      .map(([, e]) => e);
    const rows = events.map((e) => {
      const obj = e.involvedObject || e.regarding || {};
      const count = e.count > 1 ? ` (×${e.count})` : '';
      return el('tr', {},
        el('td', { class: 'num', text: age(eventTime(e)) }),
        el('td', {}, badge(e.type || 'Normal', e.type === 'Warning' ? 'warn' : 'muted')),
        el('td', { text: e.reason || '' }),
        el('td', { class: 'mono', title: `${obj.namespace ? obj.namespace + '/' : ''}${obj.kind}/${obj.name}`,
          text: `${(obj.kind || '').toLowerCase()}/${obj.name || ''}` }),
        el('td', { class: 'msg', title: e.message || '', text: (e.message || e.note || '') + count }));
    });
    fill($('#events tbody'), rows, 5, state.denied.events ? 'not permitted' : 'no events');
    note('#events-note', ['events']);
  }

  function card(label, value, detail) {
    return el('div', { class: 'card' },
      el('div', { class: 'label', text: label }),
      el('div', { class: 'value', text: value }),
      el('div', { class: 'detail', text: detail }));
  }

  function setLive(on) {
    const live = $('#live');
    live.className = 'live ' + (on ? 'on' : 'off');
    live.textContent = on ? 'live' : 'offline';
  }

  function render() {
    renderTimer = null;
    if ($('#dash').hidden) return;
    const pods = values('pods');
    const nodes = renderNodes(pods);
    const [complete, workloads] = renderWorkloads(pods);
    const raft = renderRaft();
    renderEvents();
    const ready = nodes.filter((n) => ((n.status || {}).conditions || [])
      .some((c) => c.type === 'Ready' && c.status === 'True')).length;
    const running = pods.filter((p) => (p.status || {}).phase === 'Running').length;
    const leader = raft && raft.members.find((m) => m.role === 'leader');
    $('#summary').replaceChildren(
      card('Nodes ready', `${ready} / ${nodes.length}`, state.denied.nodes ? 'not permitted' : 'Ready condition'),
      card('Pods running', `${running} / ${pods.length}`, state.denied.pods ? 'not permitted' : 'all namespaces'),
      card('Rollouts complete', `${complete} / ${workloads}`, 'deployments, statefulsets, daemonsets'),
      card('Raft', raft ? `term ${raft.term}` : '—',
        raft ? `${raft.members.length} member(s), leader ${leader ? leader.name : 'none'}` : 'no status'));
    const permitted = SOURCES.filter((s) => !state.denied[s.key]);
    setLive(permitted.length > 0 && permitted.every((s) => state.streaming[s.key]));
  }

  // Ages tick even when nothing changes.
  setInterval(schedule, 5000);

  async function start() {
    $('#login-form').addEventListener('submit', login);
    $('#logout').addEventListener('click', logout);
    let user = null;
    try {
      user = await whoAmI();
    } catch (e) {
      return showLogin('cannot reach the API: ' + e.message);
    }
    if (user) showDashboard(user);
    else showLogin(sessionStorage.getItem(TOKEN_KEY) ? 'the API refused the stored token (401)' : '');
  }

  start();
}());
