// edged dashboard: one status document (/api/v1/status, the same edged status prints),
// rendered into panels; actions are POSTs with the token and the X-Edged-Action header.
'use strict';
(function () {
  const POLL_MS = 2000;
  const TOKEN_KEY = 'edged-admin-token';
  const $ = (id) => document.getElementById(id);
  let doc = null;          // the last status document
  let timer = null;
  let confirming = '';     // the action awaiting its second click, e.g. "purge:cloud"
  let dlqOpen = '';        // outbox whose dead letters are shown
  let dlqSeen = -1;        // its dlq_depth when last listed
  let live = null;         // AbortController of the live stream

  // el builds DOM without innerHTML: every value from the gateway is text, never markup.
  function el(tag, attrs, ...kids) {
    const n = tag === 'svg' || tag === 'polyline'
      ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'on') { for (const [ev, fn] of Object.entries(v)) n.addEventListener(ev, fn); }
      else if (k === 'text') n.textContent = v;
      else n.setAttribute(k, v === true ? '' : String(v));
    }
    for (const k of kids.flat()) if (k !== undefined && k !== null) n.append(k instanceof Node ? k : String(k));
    return n;
  }
  function fill(node, ...kids) { node.replaceChildren(...kids.flat()); }

  function fmtBytes(n) {
    if (n === undefined || n === null || n < 0) return '?';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0, v = n;
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return i === 0 ? n + ' B' : v.toFixed(1) + ' ' + u[i];
  }
  function fmtDur(s) {
    s = Math.max(0, Math.floor(s || 0));
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60), x = s % 60;
    if (d) return d + 'd ' + h + 'h ' + m + 'm';
    if (h) return h + 'h ' + m + 'm';
    if (m) return m + 'm ' + x + 's';
    return x + 's';
  }
  function ago(iso) {
    if (!iso || iso.startsWith('0001')) return '?';
    return fmtDur((Date.now() - Date.parse(iso)) / 1000) + ' ago';
  }
  // v renders one figure; data-k names it (for tests and people reading the DOM), data-v
  // holds the exact number behind a formatted one.
  function v(key, text, raw, title) {
    return el('span', { 'data-k': key, 'data-v': raw, title: title }, text);
  }
  function card(label, node) { return el('div', { class: 'card' }, el('div', { class: 'l' }, label), el('div', { class: 'v' }, node)); }
  function badge(state, good, bad) {
    const cls = good.includes(state) ? 'b-ok' : bad.includes(state) ? 'b-bad' : 'b-warn';
    return el('span', { class: 'badge ' + cls }, state);
  }
  function table(node, head, rows, empty) {
    const th = el('tr', {}, head.map(h => el('th', { class: h.endsWith('#') ? 'num' : '' }, h.replace(/#$/, ''))));
    const body = rows.length ? rows : [el('tr', {}, el('td', { colspan: head.length, class: 'muted' }, empty))];
    fill(node, el('thead', {}, th), el('tbody', {}, body));
  }
  const num = (key, n) => el('td', { class: 'num' }, v(key, String(n ?? 0), n ?? 0));

  // --- API ---
  function headers(extra) {
    const h = Object.assign({}, extra);
    const t = sessionStorage.getItem(TOKEN_KEY);
    if (t) h.Authorization = 'Bearer ' + t;
    return h;
  }
  async function api(path, opts) {
    const r = await fetch(path, Object.assign({ cache: 'no-store' }, opts, { headers: headers(opts && opts.headers) }));
    if (r.status === 401) {
      const had = sessionStorage.getItem(TOKEN_KEY);
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(had ? 'That token was not accepted.' : '');
      throw new Error('unauthorized');
    }
    const body = await r.text();
    if (!r.ok) throw new Error(body.trim() || r.statusText);
    return body ? JSON.parse(body) : null;
  }
  function post(path, body) {
    return api(path, { method: 'POST', body: JSON.stringify(body || {}),
      headers: { 'Content-Type': 'application/json', 'X-Edged-Action': '1' } });
  }
  function showError(msg) { const e = $('error'); e.hidden = !msg; e.textContent = msg || ''; }

  // --- login ---
  function showLogin(msg) {
    stopPoll();
    $('login').hidden = false;
    $('loginerr').textContent = msg;
    document.querySelectorAll('.page').forEach(p => p.classList.remove('on'));
  }
  $('loginform').addEventListener('submit', (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('token').value.trim());
    $('token').value = '';
    $('login').hidden = true;
    start();
  });
  $('logout').addEventListener('click', () => { sessionStorage.removeItem(TOKEN_KEY); stopLive(); showLogin('Logged out.'); });

  // --- polling ---
  async function refresh() {
    try {
      doc = await api('/api/v1/status');
      showError('');
      render();
    } catch (err) {
      if (err.message !== 'unauthorized') showError('Cannot reach edged: ' + err.message);
    }
  }
  function start() {
    $('logout').hidden = !sessionStorage.getItem(TOKEN_KEY);
    route();
    refresh();
    stopPoll();
    timer = setInterval(refresh, POLL_MS);
  }
  function stopPoll() { if (timer) clearInterval(timer); timer = null; }

  function route() {
    const page = (location.hash || '#overview').slice(1);
    document.querySelectorAll('.page').forEach(p => p.classList.toggle('on', p.id === page));
    document.querySelectorAll('#nav a').forEach(a => a.classList.toggle('on', a.getAttribute('href') === '#' + page));
  }
  window.addEventListener('hashchange', route);

  function render() {
    if (!doc) return;
    $('gw').textContent = doc.gateway_id || '';
    renderOverview(); renderConnectors(); renderOutboxes(); renderClients(); renderPorts();
    $('foot').textContent = 'edged ' + doc.version + ' · updated ' + new Date().toLocaleTimeString();
    document.body.setAttribute('data-rendered', String(Date.now()));
  }

  function renderOverview() {
    const h = doc.health || { verdict: '?', reasons: [] };
    const vd = $('verdict');
    vd.className = 'verdict v-' + h.verdict;
    fill(vd, v('verdict', h.verdict === 'ok' ? 'All good' : h.verdict === 'degraded' ? 'Needs a look' : h.verdict === 'failing' ? 'Failing' : h.verdict, h.verdict));
    fill($('reasons'), (h.reasons || []).map(r => el('li', {}, r)));
    const b = doc.broker || {}, st = doc.storage || {}, p = doc.process || {}, hi = doc.history || {};
    fill($('ovcards'),
      card('Version', v('version', doc.version)),
      card('Uptime', v('uptime', fmtDur(doc.uptime_seconds), doc.uptime_seconds, 'since ' + doc.started_at)),
      card('Memory (RssAnon)', v('rss_anon', fmtBytes(p.rss_anon_bytes), p.rss_anon_bytes,
        'RSS ' + fmtBytes(p.rss_bytes) + ', Go ' + fmtBytes(p.go_bytes) + (p.memory_limit > 0 ? ', limit ' + fmtBytes(p.memory_limit) : ''))),
      card('Disk free', v('disk_free', fmtBytes(st.disk_free), st.disk_free)),
      card('Written / hour', v('bytes_written_per_hour', hi.bytes_written_per_hour == null ? 'measuring…' : fmtBytes(Math.round(hi.bytes_written_per_hour)),
        hi.bytes_written_per_hour == null ? '' : Math.round(hi.bytes_written_per_hour),
        'written to the block device (SD card wear); since start: ' + fmtBytes(st.bytes_written))),
      card('Clients', v('clients_connected', String(b.clients_connected ?? 0), b.clients_connected)),
      card('Messages in', v('messages_received', String(b.messages_received ?? 0), b.messages_received)),
      card('Messages out', v('messages_sent', String(b.messages_sent ?? 0), b.messages_sent)),
      card('Queued (all outboxes)', v('queued', String((st.outboxes || []).reduce((a, o) => a + o.depth, 0)))),
    );
  }

  function spark(series) {
    if (!series || series.length < 2) return el('div', { class: 'muted l' }, 'depth history: collecting…');
    const max = Math.max(1, ...series), w = 120, hgt = 40;
    const pts = series.map((y, i) => (i * w / (series.length - 1)).toFixed(1) + ',' + (hgt - 2 - y * (hgt - 4) / max).toFixed(1)).join(' ');
    return el('div', {}, el('svg', { class: 'spark', viewBox: '0 0 ' + w + ' ' + hgt, preserveAspectRatio: 'none', role: 'img',
      'aria-label': 'queue depth over the last hour, max ' + max }, el('polyline', { points: pts })),
      el('div', { class: 'muted l' }, 'queue depth, last ' + fmtDur(Date.now() / 1000 - (((doc.history || {}).times || [])[0] || Date.now() / 1000)) + ' (max ' + max + ')'));
  }

  function renderConnectors() {
    const conns = doc.connectors || [], eps = doc.endpoints || {}, hist = (doc.history || {}).outbox_depth || {};
    if (!conns.length) { fill($('connlist'), el('p', { class: 'muted' }, 'No connectors configured.')); return; }
    fill($('connlist'), conns.map(c => {
      const k = 'conn.' + c.name + '.';
      const series = (hist[c.name] || []).concat([c.depth]);
      return el('div', { class: 'card', 'data-connector': c.name },
        el('h2', {}, c.name + ' ', badge(c.state, ['connected'], ['open', 'stalled', 'stopped']), ' ',
          el('span', { class: 'muted l' }, c.type)),
        el('dl', { class: 'kv' },
          el('dt', {}, 'state'), el('dd', {}, v(k + 'state', c.state), ' ', el('span', { class: 'muted' }, 'since ' + ago(c.since))),
          el('dt', {}, 'endpoint'), el('dd', {}, v(k + 'endpoint', eps[c.name] || '—')),
          el('dt', {}, 'queued'), el('dd', {}, v(k + 'depth', String(c.depth), c.depth), ' (' + fmtBytes(c.bytes) + ')'),
          el('dt', {}, 'oldest'), el('dd', {}, v(k + 'oldest', c.depth ? fmtDur(c.oldest_age_seconds) : '—', c.oldest_age_seconds)),
          el('dt', {}, 'send rate'), el('dd', {}, v(k + 'sent_rate', c.sent_rate.toFixed(1), c.sent_rate), ' msg/s'),
          el('dt', {}, 'sent'), el('dd', {}, v(k + 'sent', String(c.sent), c.sent)),
          el('dt', {}, 'dead letters'), el('dd', {}, v(k + 'dead_letter_depth', String(c.dead_letter_depth), c.dead_letter_depth)),
          el('dt', {}, 'last error'), el('dd', { class: c.last_error ? 'err' : 'muted' }, v(k + 'last_error', c.last_error || 'none'),
            c.last_error ? ' (' + ago(c.last_error_at) + ')' : '')),
        spark(series));
    }));
  }

  function confirmButton(id, label, danger, question, run) {
    if (confirming === id) {
      return el('span', { class: 'confirm' }, el('span', {}, question),
        el('button', { class: 'danger', 'data-act': id + ':yes', on: { click: async (e) => {
          e.target.disabled = true; confirming = '';
          try { await run(); showError(''); } catch (err) { showError(err.message); }
          await refresh(); if (dlqOpen) loadDLQ(dlqOpen);
        } } }, 'Yes'),
        el('button', { class: 'sec', 'data-act': id + ':no', on: { click: () => { confirming = ''; render(); if (dlqOpen) loadDLQ(dlqOpen); } } }, 'Cancel'));
    }
    return el('button', { class: danger ? 'danger' : 'sec', 'data-act': id, on: { click: () => {
      confirming = id; render(); if (dlqOpen) loadDLQ(dlqOpen);
    } } }, label);
  }

  function renderOutboxes() {
    const obs = (doc.storage || {}).outboxes || [];
    table($('obtable'), ['outbox', 'queued#', 'bytes#', 'oldest', 'dropped#', 'rejected#', 'dead letters#', ''],
      obs.map(o => {
        const k = 'ob.' + o.name + '.';
        const drops = Object.values(o.drops || {}).reduce((a, n) => a + n, 0);
        return el('tr', {}, el('td', {}, o.name, o.configured ? '' : el('span', { class: 'muted' }, ' (not configured)')),
          num(k + 'depth', o.depth),
          el('td', { class: 'num' }, v(k + 'bytes', fmtBytes(o.bytes), o.bytes)),
          el('td', {}, o.depth ? fmtDur(o.oldest_age_seconds) : '—'),
          el('td', { class: 'num', title: JSON.stringify(o.drops || {}) }, v(k + 'dropped', String(drops), drops)),
          num(k + 'rejected', o.rejected),
          num(k + 'dlq_depth', o.dlq_depth),
          el('td', {}, el('button', { class: 'sec', 'data-act': 'dlq:' + o.name, on: { click: () => loadDLQ(o.name) } }, 'Dead letters')));
      }), 'No outboxes.');
    const open = obs.find(o => o.name === dlqOpen);
    if (open && open.dlq_depth !== dlqSeen) loadDLQ(dlqOpen);
  }

  async function loadDLQ(name) {
    dlqOpen = name;
    const box = $('dlq');
    let res;
    try { res = await api('/api/v1/outboxes/' + encodeURIComponent(name) + '/dead-letters?limit=100'); }
    catch (err) { fill(box, el('p', { class: 'err' }, err.message)); return; }
    const ob = ((doc.storage || {}).outboxes || []).find(o => o.name === name) || {};
    dlqSeen = ob.dlq_depth;
    const dl = res.dead_letters || [];
    const base = '/api/v1/outboxes/' + encodeURIComponent(name) + '/dead-letters/';
    const rows = dl.map(d => el('tr', { 'data-seq': d.seq },
      el('td', { class: 'num' }, String(d.seq)), el('td', {}, d.time), el('td', {}, d.reason),
      el('td', {}, d.topic || d.error || ''), el('td', { class: 'num' }, String(d.size)),
      el('td', {}, el('pre', {}, (d.payload && d.payload.text) || '')),
      el('td', {}, el('button', { class: 'sec', 'data-act': 'requeue:' + name + ':' + d.seq, on: { click: async (e) => {
        e.target.disabled = true;
        try { await post(base + 'requeue', { seqs: [d.seq] }); showError(''); } catch (err) { showError(err.message); }
        await refresh(); loadDLQ(name);
      } } }, 'Requeue'))));
    const tbl = el('table', {});
    table(tbl, ['seq#', 'dead since', 'reason', 'topic', 'size#', 'payload', ''], rows, 'No dead letters.');
    fill(box, el('h2', {}, 'Dead letters of ' + name + ' (' + (ob.dlq_depth ?? dl.length) + ')'),
      dl.length ? el('p', {},
        confirmButton('requeueall:' + name, 'Requeue all', false, 'Requeue all ' + ob.dlq_depth + '?', () => post(base + 'requeue', { all: true })), ' ',
        confirmButton('purge:' + name, 'Purge', true, 'Delete all ' + ob.dlq_depth + ' for good?', () => post(base + 'purge'))) : '',
      el('div', { class: 'scroll' }, tbl));
  }

  function proto(p) { return p === 5 ? '5' : p === 4 ? '3.1.1' : p === 3 ? '3.1' : String(p); }

  function renderClients() {
    const cls = doc.clients || [];
    table($('cltable'), ['client id', 'user', 'address', 'MQTT', 'subscriptions#', 'connected', ''],
      cls.map(c => {
        const k = 'cl.' + c.id + '.';
        return el('tr', { 'data-client': c.id }, el('td', {}, v(k + 'id', c.id)), el('td', {}, v(k + 'username', c.username || '—')),
          el('td', {}, v(k + 'remote', c.remote)), el('td', {}, proto(c.protocol_version)),
          num(k + 'subscriptions', c.subscriptions),
          el('td', { title: c.connected_at || '' }, c.connected_at ? ago(c.connected_at) : '?'),
          el('td', {}, confirmButton('disconnect:' + c.id, 'Disconnect', true, 'Disconnect?',
            () => post('/api/v1/clients/disconnect', { id: c.id }))));
      }), 'No clients connected.');
  }

  function renderPorts() {
    const ports = doc.serial || [];
    table($('serialtable'), ['port', 'device', 'state', 'frames in#', 'frames out#', 'invalid#', 'dropped#', 'bytes in#', 'last value', 'last error'],
      ports.map(p => {
        const k = 'sp.' + p.name + '.';
        return el('tr', {}, el('td', {}, p.name), el('td', {}, p.path),
          el('td', {}, badge(p.state, ['open'], ['error']), ' ', v(k + 'state', '', p.state), el('span', { class: 'muted' }, ' ' + ago(p.since))),
          num(k + 'frames_in', p.frames_in), num(k + 'frames_out', p.frames_out), num(k + 'invalid', p.invalid),
          num(k + 'dropped', p.dropped), el('td', { class: 'num' }, fmtBytes(p.bytes_in)),
          el('td', { class: p.last_frame ? '' : 'muted' }, p.last_frame ? p.last_frame + ' ' : '—',
            p.last_frame_at ? el('span', { class: 'muted' }, ago(p.last_frame_at)) : ''),
          el('td', { class: p.last_error ? 'err' : 'muted' }, p.last_error || '—'));
      }), 'No serial ports configured.');
    // Modbus: one row a bus, then one a unit (up/down, polls, errors, last good read).
    const mb = doc.modbus;
    if (!Array.isArray(mb) || !mb.length) { fill($('modbus')); return; }
    const rows = [];
    for (const b of mb) {
      const k = 'mb.' + b.name + '.';
      rows.push(el('tr', {}, el('td', {}, el('b', {}, b.name), ' (' + b.kind + ')'), el('td', {}, b.path || ''),
        el('td', {}, badge(b.state, ['open'], ['error']), ' ', v(k + 'state', '', b.state), el('span', { class: 'muted' }, ' ' + ago(b.since))),
        num(k + 'requests', b.requests), num(k + 'published', b.published), el('td', {}), el('td', {}), el('td', {}),
        el('td', { class: b.last_error ? 'err' : 'muted' }, b.last_error || '—')));
      for (const u of (b.units || [])) {
        const ku = k + u.name + '.';
        const exc = Object.values(u.exceptions || {}).reduce((a, n) => a + n, 0);
        rows.push(el('tr', {}, el('td', {}, '\u00a0\u00a0' + u.name + ' (id ' + u.id + ')'),
          el('td', { class: 'muted' }, u.last_ok ? 'last good read ' + ago(u.last_ok) : 'no good read yet'),
          el('td', {}, badge(u.state, ['online'], ['offline']), ' ', v(ku + 'state', '', u.state)),
          num(ku + 'polls', u.polls), num(ku + 'published', u.published), num(ku + 'timeouts', u.timeouts),
          num(ku + 'crc_errors', u.crc_errors), num(ku + 'exceptions', exc),
          el('td', { class: u.last_error ? 'err' : 'muted' }, u.last_error || '—')));
      }
    }
    const tbl = el('table', {});
    table(tbl, ['bus / unit', 'device / last read', 'state', 'polls#', 'published#', 'timeouts#', 'crc errors#', 'exceptions#', 'last error'], rows, '');
    fill($('modbus'), el('h1', {}, 'Modbus'), el('div', { class: 'scroll' }, tbl));
  }

  // --- live view: server-sent events read through fetch, so the token goes in a header ---
  function stopLive() { if (live) live.abort(); live = null; $('livebtn').textContent = 'Watch'; }
  $('liveform').addEventListener('submit', (e) => {
    e.preventDefault();
    if (live) { stopLive(); return; }
    watch($('filter').value.trim() || '#');
  });
  async function watch(filter) {
    live = new AbortController();
    const ctl = live;
    $('livebtn').textContent = 'Stop';
    $('livestats').textContent = 'Connecting…';
    try {
      const r = await fetch('/api/v1/live?filter=' + encodeURIComponent(filter), { headers: headers(), signal: ctl.signal });
      if (r.status === 401) { showLogin(''); return; }
      if (!r.ok) throw new Error((await r.text()).trim());
      const rd = r.body.getReader(), dec = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await rd.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) { onEvent(buf.slice(0, i)); buf = buf.slice(i + 2); }
      }
      $('livestats').textContent = 'Stream ended.';
    } catch (err) {
      if (ctl.signal.aborted) $('livestats').textContent = 'Stopped.';
      else $('livestats').textContent = 'Live view failed: ' + err.message;
    } finally { if (live === ctl) stopLive(); }
  }
  function onEvent(block) {
    let ev = 'message', data = '';
    for (const line of block.split('\n')) {
      if (line.startsWith('event: ')) ev = line.slice(7);
      else if (line.startsWith('data: ')) data += line.slice(6);
    }
    const d = JSON.parse(data || '{}');
    if (ev === 'hello') $('livestats').textContent = 'Watching ' + d.filter + ' (at most ' + d.rate + ' messages/s shown).';
    else if (ev === 'stats') $('livestats').textContent = 'Watching: ' + d.delivered + ' shown, ' + d.dropped + ' skipped (rate limit).';
    else if (ev === 'message') {
      const p = d.payload || {};
      const li = el('li', { 'data-topic': d.topic },
        el('div', {}, el('span', { class: 't' }, d.topic), ' ',
          el('span', { class: 'muted' }, 'QoS ' + d.qos + (d.retain ? ' retained' : '') + (d.replayed ? ' (stored)' : '') +
            ' · ' + (d.client_id || '') + (d.username ? ' (' + d.username + ')' : '') + ' · ' + new Date(d.time).toLocaleTimeString() +
            ' · ' + p.size + ' B ' + p.kind)),
        el('pre', { 'data-kind': p.kind }, (p.text || '') + (p.truncated ? ' …' : '')));
      const list = $('livelist');
      list.prepend(li);
      while (list.children.length > 200) list.lastChild.remove();
    }
  }

  start();
})();
