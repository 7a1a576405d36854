/*! Parley chat widget. One global: window.Parley. Protocol: docs/protocol.md */
(function () {
  'use strict';
  var script = document.currentScript;
  if (!script || !script.dataset.site) {
    console.warn('Parley: the script tag needs data-site="SITE_KEY"');
    return;
  }
  var siteKey = script.dataset.site;
  var server = new URL(script.src, location.href);
  var wsURL = (server.protocol === 'https:' ? 'wss://' : 'ws://') + server.host + '/ws/chat/' + encodeURIComponent(siteKey) + '/';
  var storeKey = 'parley:' + siteKey;

  // Calls made before the script loaded wait in window.Parley.q (the queue stub); replay them below.
  var queued = (window.Parley && window.Parley.q) || [];
  var listeners = {};

  function load() { try { return localStorage.getItem(storeKey); } catch (e) { return null; } }
  function save(v) { try { v ? localStorage.setItem(storeKey, v) : localStorage.removeItem(storeKey); } catch (e) { /* private mode */ } }

  var CSS = [
    ':host{all:initial;position:fixed;z-index:2147483000;bottom:20px;right:20px;font:15px/1.4 system-ui,sans-serif;color:#111}',
    '*{box-sizing:border-box}',
    'button{font:inherit;cursor:pointer}',
    '.launch{width:56px;height:56px;border-radius:50%;border:0;background:var(--c);color:#fff;font-size:24px;box-shadow:0 4px 14px rgba(0,0,0,.25)}',
    '.panel{position:absolute;bottom:70px;right:0;width:360px;max-width:calc(100vw - 40px);height:520px;max-height:calc(100vh - 110px);display:flex;flex-direction:column;background:#fff;border-radius:12px;box-shadow:0 8px 30px rgba(0,0,0,.25);overflow:hidden}',
    '.panel[hidden]{display:none}',
    'header{display:flex;align-items:center;justify-content:space-between;padding:12px 14px;background:var(--c);color:#fff;font-weight:600}',
    'header button{background:none;border:0;color:#fff;font-size:20px}',
    '.log{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:8px}',
    '.m{max-width:85%;padding:8px 11px;border-radius:12px;white-space:pre-wrap;word-wrap:break-word}',
    '.user{align-self:flex-end;background:var(--c);color:#fff}',
    '.assistant,.agent,.system{align-self:flex-start;background:#f1f3f5}',
    '.error{background:#fdecea;color:#8a1c12}',
    '.note{align-self:center;font-size:13px;color:#555}',
    'form{display:flex;gap:8px;padding:10px;border-top:1px solid #e5e7eb}',
    'textarea{flex:1;resize:none;font:inherit;font-size:16px;padding:8px;border:1px solid #ccc;border-radius:8px;min-height:40px;max-height:120px}',
    'form button{border:0;border-radius:8px;padding:0 14px;background:var(--c);color:#fff}',
    'form button:disabled{opacity:.5}'
  ].join('');

  var host = document.createElement('div');
  host.setAttribute('data-parley', '');
  var root = host.attachShadow({ mode: 'closed' });
  try {
    var sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
    root.adoptedStyleSheets = [sheet];
  } catch (e) {
    console.warn('Parley: this browser lacks constructable stylesheets');
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    for (var k in attrs) node.setAttribute(k, attrs[k]);
    if (text) node.textContent = text;
    return node;
  }

  var launcher = el('button', { class: 'launch', 'aria-label': 'Open chat', 'aria-expanded': 'false' }, '💬');
  var panel = el('div', { class: 'panel', role: 'dialog', 'aria-label': 'Chat' });
  panel.hidden = true;
  var title = el('span', {}, 'Support');
  var closeBtn = el('button', { 'aria-label': 'Close chat' }, '×');
  var header = el('header');
  header.append(title, closeBtn);
  var log = el('div', { class: 'log', role: 'log', 'aria-live': 'polite' });
  var form = el('form');
  var input = el('textarea', { rows: '1', 'aria-label': 'Your message', placeholder: 'Type your question…' });
  var sendBtn = el('button', { type: 'submit' }, 'Send');
  form.append(input, sendBtn);
  panel.append(header, log, form);
  root.append(panel, launcher);
  host.style.setProperty('--c', script.dataset.color || '#2563eb');

  var ws = null, ready = false, attempt = 0, streaming = null, pending = [], bubbles = {}, greeted = false;

  function emit(name, data) { (listeners[name] || []).forEach(function (fn) { try { fn(data); } catch (e) { console.warn(e); } }); }

  function bubble(role, text, id) {
    var node = el('div', { class: 'm ' + role }, text);
    log.append(node);
    if (id) bubbles[id] = node;
    log.scrollTop = log.scrollHeight;
    return node;
  }
  function note(text) { return bubble('note', text); }

  function send(frame) {
    if (ws && ws.readyState === 1) { ws.send(JSON.stringify(frame)); return true; }
    return false;
  }

  function setStreaming(id) {
    streaming = id;
    sendBtn.textContent = id ? 'Stop' : 'Send';
  }

  function connect() {
    if (ws) return;
    ws = new WebSocket(wsURL);
    ws.onopen = function () { send({ type: 'hello', visitor: load() }); };
    ws.onmessage = function (event) {
      var f;
      try { f = JSON.parse(event.data); } catch (e) { return; }
      handle(f);
    };
    ws.onclose = function () {
      ws = null; ready = false; setStreaming(null);
      // Exponential backoff with full jitter, capped at 30 s, so a restarted server is not stampeded.
      var delay = Math.random() * Math.min(30000, 500 * Math.pow(2, attempt++));
      setTimeout(connect, delay);
    };
  }

  function handle(f) {
    if (f.type === 'ready') {
      attempt = 0; ready = true;
      save(f.visitor);
      var c = f.config || {};
      if (c.title) title.textContent = c.title;
      if (c.color) host.style.setProperty('--c', c.color);
      log.textContent = ''; bubbles = {};
      if (c.greeting) bubble('assistant', c.greeting);
      (f.history || []).forEach(function (m) { bubble(m.role, m.text, m.id); });
      if (c.available === false) note('The assistant is not set up yet.');
      // Messages typed while offline go out once; their client ids make a resend harmless.
      pending.splice(0).forEach(function (p) { send(p); });
    } else if (f.type === 'start') {
      setStreaming(f.message);
      bubble('assistant', '', f.message);
    } else if (f.type === 'delta') {
      var b = bubbles[f.message] || bubble('assistant', '', f.message);
      b.textContent += f.text;
      log.scrollTop = log.scrollHeight;
    } else if (f.type === 'end') {
      var node = bubbles[f.message] || bubble('assistant', '', f.message);
      node.textContent = f.text;
      if (f.status === 'error' && !f.text) node.remove();
      if (f.status === 'stopped') note('Stopped.');
      setStreaming(null);
      emit('message', { role: 'assistant', text: f.text, status: f.status });
    } else if (f.type === 'message') {
      bubble(f.role || 'agent', f.text, f.id);
      emit('message', f);
    } else if (f.type === 'error') {
      bubble('error', f.message || 'Something went wrong.');
    }
  }

  function submit() {
    var text = input.value.trim();
    if (!text) return;
    input.value = '';
    var frame = { type: 'message', id: Date.now().toString(36) + Math.random().toString(36).slice(2, 8), text: text };
    bubble('user', text);
    if (!(ready && send(frame))) { pending.push(frame); note('Offline: your message will be sent when the connection is back.'); connect(); }
  }

  form.addEventListener('submit', function (e) {
    e.preventDefault();
    if (streaming) send({ type: 'stop' }); else submit();
  });
  input.addEventListener('keydown', function (e) {
    if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); if (!streaming) submit(); }
  });

  function open() {
    panel.hidden = false;
    launcher.setAttribute('aria-expanded', 'true');
    connect();
    input.focus();
  }
  function close() {
    panel.hidden = true;
    launcher.setAttribute('aria-expanded', 'false');
    launcher.focus();
  }
  launcher.addEventListener('click', function () { panel.hidden ? open() : close(); });
  closeBtn.addEventListener('click', close);
  panel.addEventListener('keydown', function (e) { if (e.key === 'Escape') close(); });

  var api = {
    open: open,
    close: close,
    on: function (name, fn) { (listeners[name] = listeners[name] || []).push(fn); }
  };
  window.Parley = api;
  queued.forEach(function (call) { var fn = api[call[0]]; if (fn) fn.apply(null, [].slice.call(call, 1)); });

  function mount() { document.body.append(host); if (load()) connect(); }
  document.body ? mount() : document.addEventListener('DOMContentLoaded', mount);
})();
