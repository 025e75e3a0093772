"""The board's two pages (http_view.py serves them): `/`, the home page for a browser (the live
view, counters, the last records or parts, the model), and `/label`, the labelling page. Each is
one HTML document with its small CSS and script inline, and nothing fetched from elsewhere (a
board on a plant network reaches no CDN).

What the pages show comes from the board's JSON (/latest, /health, /label/queue) and is written
with textContent, never as HTML: a class name or a file name cannot inject markup. The few values
the server writes into a page are escaped. A Content-Security-Policy with a fresh nonce per answer
allows only the page's own script and style, and requests to this server alone.
"""

from __future__ import annotations

import html
import secrets

from edgecls.runtime.records import Identity

CSP = (
    "default-src 'none'; img-src 'self'; connect-src 'self'; style-src 'nonce-{nonce}'; "
    "script-src 'nonce-{nonce}'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title}}</title>
<style nonce="{{nonce}}">
body{font:15px/1.4 system-ui,sans-serif;margin:0;background:#111;color:#eee}
header{display:flex;flex-wrap:wrap;gap:1em;align-items:baseline;padding:.5em 1em;background:#222}
header h1{font-size:1.2em;margin:0}
a{color:#8cf} nav a{margin-right:1em}
main{padding:1em;display:flex;flex-wrap:wrap;gap:1.5em}
h2{font-size:1em;margin:1em 0 .3em;color:#aaa}
table{border-collapse:collapse}
td,th{padding:.15em .6em;text-align:left;border-bottom:1px solid #333}
dl{display:grid;grid-template-columns:auto 1fr;gap:.2em 1em;margin:0} dt{color:#aaa} dd{margin:0}
.view img{max-width:100%;width:640px;background:#000;display:block}
.reject,.bad{color:#f66} .warn{color:#fc6} .ok{color:#6d6}
#frame{width:640px;max-width:100%;max-height:60vh;object-fit:contain;background:#000;display:block}
.keys{display:flex;flex-wrap:wrap;gap:.5em;margin:.8em 0}
.keys button{font-size:1.2em;min-height:3em;min-width:6em;padding:.3em .8em;border-radius:.4em;
 border:1px solid #555;background:#2a2a2a;color:#eee;cursor:pointer}
.keys button.cls{background:#234;border-color:#468}
.keys button[aria-pressed=true]{background:#468}
kbd{font:inherit;font-size:.8em;color:#9cf;border:1px solid #468;border-radius:.2em;padding:0 .3em}
#status{min-height:1.5em}
</style></head>
"""

HOME_PAGE = (
    HEAD
    + """<body>
<header><h1>edgecls</h1><span id="model">{{bundle}}</span><nav>{{links}}</nav></header>
<main>
<section class="view"><img id="live" src="/stream" alt="the live view"></section>
<section>
<h2>now</h2>
<dl id="counters"><dt>frames</dt><dd id="frames">-</dd><dt>fps</dt><dd id="fps">-</dd>
<dt>drift</dt><dd id="drift">-</dd><dt>state</dt><dd id="state">-</dd></dl>
<h2>model</h2>
<dl><dt>bundle</dt><dd id="bundle">{{bundle}}</dd>
<dt>artifact</dt><dd id="artifact">{{artifact}}</dd>
<dt>sha256</dt><dd id="sha256">{{sha256}}</dd></dl>
<h2 id="recent-title">last records</h2>
<table id="recent"><thead><tr id="recent-head"></tr></thead><tbody id="recent-rows"></tbody></table>
</section></main>
<script nonce="{{nonce}}">
'use strict';
const $ = (id) => document.getElementById(id);
const KEEP = 10;
const COLUMNS = {
  record: [['frame', (d) => d.frame], ['time', (d) => clock(d.time)],
           ['label', (d) => d.label ?? 'uncertain'], ['confidence', (d) => pct(d.confidence)],
           ['ms', (d) => d.latency_ms]],
  part: [['part', (d) => d.part], ['plc id', (d) => d.plc_id ?? ''],
         ['label', (d) => d.label ?? 'fail-safe'], ['confidence', (d) => pct(d.confidence)],
         ['verdict', (d) => d.reject ? 'reject' : 'pass'], ['ms', (d) => d.latency_ms]],
};
let mode = null, lastKey = null;
function clock(t) { return new Date(t * 1000).toLocaleTimeString(); }
function pct(p) { return (100 * p).toFixed(1) + '%'; }
function put(id, v) { $(id).textContent = v; }
function cell(tr, tag, text) {
  const td = document.createElement(tag);
  td.textContent = String(text);
  tr.appendChild(td);
}
function header(kind) {
  mode = kind;
  put('recent-title', kind === 'part' ? 'last parts' : 'last records');
  const head = $('recent-head');
  head.replaceChildren();
  for (const [name] of COLUMNS[kind]) cell(head, 'th', name);
  $('recent-rows').replaceChildren();
}
function addRow(kind, d) {
  if (mode !== kind) header(kind);
  const key = kind === 'part' ? d.part : d.frame;
  if (key === lastKey) return;
  lastKey = key;
  const tr = document.createElement('tr');
  if (d.reject) tr.className = 'reject';
  for (const [, get] of COLUMNS[kind]) cell(tr, 'td', get(d));
  const rows = $('recent-rows');
  rows.insertBefore(tr, rows.firstChild);
  while (rows.children.length > KEEP) rows.removeChild(rows.lastChild);
}
async function tick() {
  try {
    const health = await fetch('/health', {cache: 'no-store'});
    put('state', (await health.json()).status);
    const r = await fetch('/latest', {cache: 'no-store'});
    if (!r.ok) return;
    const d = await r.json();
    put('frames', d.frames ?? d.frame);
    put('fps', Number(d.fps).toFixed(1));
    put('drift', d.drift ? Number(d.drift.score).toFixed(2) + ' (' + d.drift.state + ')' : 'off');
    put('bundle', d.bundle); put('model', d.bundle); put('artifact', d.artifact);
    put('sha256', String(d.sha256).slice(0, 12));
    if (!('last_part' in d)) addRow('record', d);
    else if (d.last_part) addRow('part', d.last_part);
  } catch (e) {
    put('state', 'the board does not answer');
  }
}
$('live').addEventListener('error', () => {
  setTimeout(() => { $('live').src = '/stream?t=' + Date.now(); }, 2000);
});
header('record');
tick();
setInterval(tick, 1000);
</script></body></html>
"""
)

LABEL_PAGE = (
    HEAD
    + """<body>
<header><h1>edgecls · label</h1><nav><a href="/">home</a></nav>
<span class="keys" id="order">
<button type="button" id="order-newest" aria-pressed="true">newest first</button>
<button type="button" id="order-uncertain" aria-pressed="false">most uncertain first</button>
</span></header>
<main>
<section>
<img id="frame" alt="the frame to label" hidden>
<p id="empty" hidden></p>
<div class="keys" id="classes"></div>
<div class="keys"><button type="button" id="unclear"><kbd>x</kbd> unclear</button>
<button type="button" id="skip"><kbd>s</kbd> skip</button>
<button type="button" id="undo"><kbd>u</kbd> undo</button>
<button type="button" id="again" hidden>show the skipped again</button></div>
<p id="status" role="status" aria-live="polite"></p>
</section>
<section>
<h2>this frame</h2>
<dl><dt>guess</dt><dd id="guess">-</dd><dt>confidence</dt><dd id="confidence">-</dd>
<dt>margin</dt><dd id="margin">-</dd><dt>kept because</dt><dd id="reasons">-</dd>
<dt>time</dt><dd id="when">-</dd><dt>name</dt><dd id="name">-</dd></dl>
<h2>progress</h2>
<table><tbody id="progress"></tbody></table>
</section></main>
<script nonce="{{nonce}}">
'use strict';
const $ = (id) => document.getElementById(id);
const who = Array.from(crypto.getRandomValues(new Uint8Array(12)),
                       (b) => b.toString(16).padStart(2, '0')).join('');
const st = {order: 'newest', classes: null, unclear: 'unclear', items: [], current: null,
            skipped: new Set(), done: [], busy: false, prefer: null};
function put(id, v) { $(id).textContent = v; }
function say(msg, kind) { const s = $('status'); s.textContent = msg; s.className = kind || ''; }
async function api(method, url, body) {
  const opt = {method, cache: 'no-store', credentials: 'same-origin', headers: {}};
  if (body !== undefined) {
    opt.headers['Content-Type'] = 'application/json';
    opt.body = JSON.stringify(body);
  }
  const r = await fetch(url, opt);
  let data = {};
  try { data = await r.json(); } catch (e) { data = {}; }
  return {status: r.status, ok: r.ok, data};
}
function buttons(classes) {
  st.classes = classes;
  const box = $('classes');
  classes.forEach((c, i) => {
    const b = document.createElement('button');
    b.type = 'button'; b.className = 'cls'; b.dataset.label = c;
    if (i < 9) {
      const k = document.createElement('kbd');
      k.textContent = String(i + 1);
      b.append(k, ' ');
    }
    b.append(c);
    b.addEventListener('click', () => label(c));
    box.appendChild(b);
  });
}
function progress(p) {
  const rows = [];
  st.classes.forEach((c, i) => rows.push([(i < 9 ? (i + 1) + ' ' : '') + c, p.labelled[c] ?? 0]));
  rows.push(['unclear', p.unclear], ['queued', p.queued]);
  $('progress').replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement('tr');
    for (const x of [k, v]) {
      const td = document.createElement('td');
      td.textContent = String(x);
      tr.appendChild(td);
    }
    tr.dataset.key = k;
    return tr;
  }));
}
async function load() {
  const r = await api('GET', '/label/queue?order=' + st.order + '&who=' + who);
  if (!r.ok) { say(r.data.error || 'the queue: HTTP ' + r.status, 'bad'); return false; }
  if (st.classes === null) { st.unclear = r.data.unclear; buttons(r.data.classes); }
  st.items = r.data.items;
  progress(r.data.progress);
  return true;
}
async function next() {
  const preferred = st.items.filter((i) => i.name === st.prefer);
  st.prefer = null;
  for (const item of preferred.concat(st.items)) {
    if (st.skipped.has(item.name)) continue;
    const r = await api('POST', '/label/lease', {name: item.name, who});
    if (r.ok) return show(item);
  }
  if (st.current) await api('POST', '/label/lease', {name: '', who});
  show(null);
}
function show(item) {
  st.current = item;
  const img = $('frame');
  $('again').hidden = !(item === null && st.skipped.size);
  $('empty').hidden = item !== null;
  img.hidden = item === null;
  if (item === null) {
    img.removeAttribute('src');
    const n = st.skipped.size;
    put('empty', n ? 'Nothing left but ' + n + ' skipped.' : 'Nothing to label.');
    for (const id of ['guess', 'confidence', 'margin', 'reasons', 'when', 'name']) put(id, '-');
    return;
  }
  img.src = '/label/image/' + encodeURIComponent(item.name);
  put('guess', item.guess || '-');
  put('confidence', (100 * item.confidence).toFixed(1) + '%');
  put('margin', item.margin.toFixed(3));
  put('reasons', item.reasons.join(', ') || '-');
  put('when', new Date(item.time * 1000).toLocaleString());
  put('name', item.name);
}
async function refresh() { if (await load()) await next(); }
async function act(work) {
  if (st.busy) return;
  st.busy = true;
  try { await work(); }
  catch (e) { say('the board does not answer (' + e + ')', 'bad'); }
  finally { st.busy = false; }
}
function label(value) {
  return act(async () => {
    const item = st.current;
    if (!item) return;
    const r = await api('POST', '/label', {name: item.name, label: value});
    if (r.ok) {
      st.done.push(item.name);
      say(item.name + ' \\u2192 ' + value, 'ok');
    } else if (r.status === 409 || r.status === 404) {
      say('Someone else was first: ' + (r.data.error || item.name) + '. Next frame.', 'warn');
    } else {
      say(r.data.error || 'HTTP ' + r.status, 'bad');
      return;
    }
    await refresh();
  });
}
function skip() {
  return act(async () => {
    if (st.current) { st.skipped.add(st.current.name); say('skipped ' + st.current.name); }
    await next();
  });
}
function undo() {
  return act(async () => {
    const name = st.done.pop();
    if (!name) { say('Nothing to undo on this page.'); return; }
    const r = await api('POST', '/label/undo', {name});
    if (r.ok) {
      say('undone: ' + name + ' (was ' + r.data.label + ') is back in the queue', 'ok');
      st.prefer = name;
      st.skipped.delete(name);
    } else {
      say(name + ': ' + (r.data.error || 'HTTP ' + r.status), 'warn');
    }
    await refresh();
  });
}
function order(value) {
  st.order = value;
  for (const v of ['newest', 'uncertain']) {
    $('order-' + v).setAttribute('aria-pressed', String(v === value));
  }
  return act(refresh);
}
function keep() {
  return act(async () => {
    if (st.current) {
      const r = await api('POST', '/label/lease', {name: st.current.name, who});
      if (!r.ok) {
        say(st.current.name + ': ' + (r.data.error || 'gone') + '. Next frame.', 'warn');
        return refresh();
      }
    }
    if (await load() && !st.current) await next();
  });
}
document.addEventListener('keydown', (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
  const cls = /^[1-9]$/.test(e.key) && st.classes ? st.classes[Number(e.key) - 1] : undefined;
  if (cls !== undefined) label(cls);
  else if (e.key === 'x') label(st.unclear);
  else if (e.key === 's') skip();
  else if (e.key === 'u' || e.key === 'Backspace') undo();
  else return;
  e.preventDefault();
});
$('unclear').addEventListener('click', () => label(st.unclear));
$('skip').addEventListener('click', skip);
$('undo').addEventListener('click', undo);
$('again').addEventListener('click', () => { st.skipped.clear(); act(next); });
$('order-newest').addEventListener('click', () => order('newest'));
$('order-uncertain').addEventListener('click', () => order('uncertain'));
act(refresh);
setInterval(keep, 20000);
</script></body></html>
"""
)


def home_page(identity: Identity, collecting: bool) -> str:
    """The home page's template with the model and the links filled in (escaped)."""
    links = ('<a href="/label">label</a>' if collecting else "") + (
        '<a href="/metrics">metrics</a><a href="/latest">latest</a>'
    )
    values = {
        "title": f"edgecls · {identity.bundle}",
        "bundle": identity.bundle,
        "artifact": identity.artifact,
        "sha256": identity.sha256[:12],
    }
    page = HOME_PAGE.replace("{{links}}", links)
    for key, value in values.items():
        page = page.replace("{{" + key + "}}", html.escape(value))
    return page


def send_page(h, page: str) -> None:
    """A page with a fresh nonce for its script and style, and headers that keep it to itself."""
    nonce = secrets.token_urlsafe(16)
    page = page.replace("{{nonce}}", nonce).replace("{{title}}", "edgecls · label")
    headers = {
        "Content-Security-Policy": CSP.format(nonce=nonce),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }
    h._send(200, "text/html; charset=utf-8", page, headers)
