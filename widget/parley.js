/*! Parley chat widget. One global: window.Parley. Protocol: docs/protocol.md. Embedding: docs/embedding.md */
(function () {
  'use strict';
  var W = window, D = document;
  if (W.Parley && W.Parley.v) return; // loaded twice: keep the first
  var script = D.currentScript || D.querySelector('script[data-site][src*="widget.js"]');
  var data = (script && script.dataset) || {};
  if (!data.site) { console.warn('Parley: the script tag needs data-site="SITE_KEY"'); return; }
  var server = new URL(script.src, location.href);
  var wsURL = server.protocol.replace('http', 'ws') + '//' + server.host + '/ws/chat/' + encodeURIComponent(data.site) + '/';
  var storeKey = 'parley:' + data.site;

  // UI text. Owners override any key with data-strings='{"send":"Go"}' or Parley.strings({...}).
  var I18N = {
    en: ['Open chat', 'Close chat', 'Support', 'Your message', 'Type your question…', 'Send', 'Stop', 'Retry', 'Talk to a person', 'New conversation', 'Forget me', 'Helpful', 'Not helpful', 'Sources', 'Offline. Your messages will be sent when the connection is back.', 'Connecting…', 'Typing…', 'Waiting for a person to join…', 'A person has joined the conversation.', 'This conversation has ended.', 'No one is free right now. Leave your email and we will reply.', 'Your email', 'Thanks! We will reply by email.', 'This chat has reached its limit for now. Please try again later.', 'Too many messages. You can send again in {n} s.', 'The assistant is not set up yet.', 'Something went wrong. Please try again.', 'Stopped.', 'unread', 'Back to the assistant.', 'Sending when back online…'],
    es: ['Abrir chat', 'Cerrar chat', 'Soporte', 'Tu mensaje', 'Escribe tu pregunta…', 'Enviar', 'Detener', 'Reintentar', 'Hablar con una persona', 'Nueva conversación', 'Olvidarme', 'Útil', 'No útil', 'Fuentes', 'Sin conexión. Tus mensajes se enviarán cuando vuelva la conexión.', 'Conectando…', 'Escribiendo…', 'Esperando a que se una una persona…', 'Una persona se ha unido a la conversación.', 'Esta conversación ha terminado.', 'No hay nadie disponible ahora. Deja tu correo y te responderemos.', 'Tu correo', '¡Gracias! Te responderemos por correo.', 'Este chat ha alcanzado su límite por ahora. Inténtalo más tarde.', 'Demasiados mensajes. Podrás enviar de nuevo en {n} s.', 'El asistente aún no está configurado.', 'Algo salió mal. Inténtalo de nuevo.', 'Detenido.', 'sin leer', 'De vuelta con el asistente.', 'Se enviará al recuperar la conexión…'],
    fr: ['Ouvrir le chat', 'Fermer le chat', 'Assistance', 'Votre message', 'Posez votre question…', 'Envoyer', 'Arrêter', 'Réessayer', 'Parler à une personne', 'Nouvelle conversation', 'M’oublier', 'Utile', 'Pas utile', 'Sources', 'Hors ligne. Vos messages partiront au retour de la connexion.', 'Connexion…', 'Écrit…', 'En attente d’une personne…', 'Une personne a rejoint la conversation.', 'Cette conversation est terminée.', 'Personne n’est disponible. Laissez votre e-mail, nous vous répondrons.', 'Votre e-mail', 'Merci ! Nous répondrons par e-mail.', 'Ce chat a atteint sa limite pour le moment. Réessayez plus tard.', 'Trop de messages. Nouvel envoi possible dans {n} s.', 'L’assistant n’est pas encore configuré.', 'Une erreur est survenue. Réessayez.', 'Arrêté.', 'non lus', 'Retour à l’assistant.', 'Envoi au retour de la connexion…'],
    de: ['Chat öffnen', 'Chat schließen', 'Support', 'Ihre Nachricht', 'Ihre Frage…', 'Senden', 'Stopp', 'Erneut versuchen', 'Mit einem Menschen sprechen', 'Neues Gespräch', 'Mich vergessen', 'Hilfreich', 'Nicht hilfreich', 'Quellen', 'Offline. Ihre Nachrichten werden gesendet, sobald die Verbindung zurück ist.', 'Verbinde…', 'Schreibt…', 'Warte auf einen Menschen…', 'Ein Mensch ist dem Gespräch beigetreten.', 'Dieses Gespräch ist beendet.', 'Gerade ist niemand frei. Hinterlassen Sie Ihre E-Mail, wir antworten.', 'Ihre E-Mail', 'Danke! Wir antworten per E-Mail.', 'Dieser Chat hat sein Limit erreicht. Bitte später erneut versuchen.', 'Zu viele Nachrichten. Erneut senden in {n} s.', 'Der Assistent ist noch nicht eingerichtet.', 'Etwas ist schiefgelaufen. Bitte erneut versuchen.', 'Gestoppt.', 'ungelesen', 'Zurück beim Assistenten.', 'Wird gesendet, sobald Sie online sind…'],
    pt: ['Abrir chat', 'Fechar chat', 'Suporte', 'Sua mensagem', 'Digite sua pergunta…', 'Enviar', 'Parar', 'Tentar de novo', 'Falar com uma pessoa', 'Nova conversa', 'Esquecer-me', 'Útil', 'Não útil', 'Fontes', 'Sem conexão. Suas mensagens serão enviadas quando a conexão voltar.', 'Conectando…', 'Digitando…', 'Aguardando uma pessoa…', 'Uma pessoa entrou na conversa.', 'Esta conversa terminou.', 'Ninguém disponível agora. Deixe seu e-mail e responderemos.', 'Seu e-mail', 'Obrigado! Responderemos por e-mail.', 'Este chat atingiu o limite por agora. Tente mais tarde.', 'Muitas mensagens. Você poderá enviar de novo em {n} s.', 'O assistente ainda não está configurado.', 'Algo deu errado. Tente de novo.', 'Parado.', 'não lidas', 'De volta ao assistente.', 'Será enviada quando a conexão voltar…']
  };
  var KEYS = 'open close title input placeholder send stop retry human new forget up down sources offline connecting typing waiting agent closed noagent email thanks quota rate unconfigured error stopped unread bot pending'.split(' ');
  var lang = String(data.lang || navigator.language || 'en').slice(0, 2).toLowerCase();
  var T = {};
  KEYS.forEach(function (k, i) { T[k] = (I18N[lang] || I18N.en)[i]; });
  function strings(over) {
    for (var k in over) if (typeof over[k] == 'string') T[k] = over[k];
    if (over && over.title) { titled = true; if (title) title.textContent = T.title; } // the owner's title beats the server's
    if (relabel) relabel();
  }
  var titled = false, title, relabel;
  try { if (data.strings) strings(JSON.parse(data.strings)); } catch (e) { console.warn('Parley: data-strings is not valid JSON'); }

  function load() { try { return localStorage.getItem(storeKey); } catch (e) { return null; } }
  function save(v) { try { v ? localStorage.setItem(storeKey, v) : localStorage.removeItem(storeKey); } catch (e) { /* storage blocked */ } }

  // Every declaration on :host is !important: a host page's "* { all: unset !important }" must not win.
  var CSS = ':host{all:initial!important;display:block!important;position:fixed!important;z-index:2147483000!important;bottom:20px!important;right:20px!important;width:auto!important;height:auto!important;visibility:visible!important;opacity:1!important;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif!important;color:var(--fg)!important;--bg:#fff;--fg:#111827;--mu:#4b5563;--bb:#f3f4f6;--ln:#1d4ed8;--bd:#d1d5db;--eb:#fef2f2;--ef:#991b1b}' +
    ':host(.l){right:auto!important;left:20px!important}' +
    '@media (prefers-color-scheme:dark){:host{--bg:#111827;--fg:#f9fafb;--mu:#9ca3af;--bb:#1f2937;--ln:#93c5fd;--bd:#4b5563;--eb:#450a0a;--ef:#fecaca}}' +
    '*{box-sizing:border-box;margin:0}[hidden]{display:none!important}' +
    'button,input,textarea{font:inherit;color:inherit}button{cursor:pointer;border:0;background:none;padding:0}' +
    ':focus-visible{outline:3px solid var(--ln);outline-offset:2px}' +
    '.launch{display:flex;align-items:center;justify-content:center;width:56px;height:56px;border-radius:50%;background:var(--c);color:var(--t);box-shadow:0 4px 14px rgba(0,0,0,.3);position:relative}' +
    '.launch svg{width:28px;height:28px;fill:currentColor}' +
    '.badge{position:absolute;top:-4px;right:-4px;min-width:22px;height:22px;padding:0 6px;border-radius:11px;background:#b91c1c;color:#fff;font-size:13px;font-weight:700;line-height:22px;text-align:center}' +
    '.panel{position:absolute;bottom:70px;right:0;width:370px;max-width:calc(100vw - 40px);height:560px;max-height:calc(100vh - 110px);display:flex;flex-direction:column;background:var(--bg);color:var(--fg);border-radius:14px;box-shadow:0 8px 30px rgba(0,0,0,.3);overflow:hidden;animation:in .18s ease-out}' +
    ':host(.l) .panel{right:auto;left:0}' +
    '@keyframes in{from{opacity:0;transform:translateY(8px)}}' +
    '@media (max-width:480px){.panel{position:fixed;top:0;left:0!important;right:0;bottom:auto;width:100%;max-width:none;height:100%;max-height:none;border-radius:0}:host(.o) .launch{display:none}}' +
    'header{display:flex;align-items:center;gap:4px;padding:10px 8px 10px 14px;background:var(--c);color:var(--t)}' +
    'header img{width:32px;height:32px;border-radius:50%}header h2{flex:1;font-size:16px;font-weight:600;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}' +
    'header button{min-width:36px;height:36px;border-radius:8px;font-size:20px;line-height:1}header button:hover{background:rgba(127,127,127,.25)}' +
    '.bar{padding:6px 14px;font-size:14px;background:var(--bb);color:var(--fg)}' +
    '.log{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:8px;overscroll-behavior:contain}' +
    '.m{max-width:85%;padding:8px 11px;border-radius:12px;overflow-wrap:anywhere;background:var(--bb);align-self:flex-start}' +
    '.user{align-self:flex-end;background:var(--c);color:var(--t);white-space:pre-wrap}' +
    '.m p+p,.m ul,.m ol,.m pre{margin-top:6px}.m ul,.m ol{padding-left:20px}' +
    '.m a{color:var(--ln)}.user a{color:inherit}' +
    'code{font:13px ui-monospace,Menlo,Consolas,monospace;background:rgba(127,127,127,.18);padding:1px 4px;border-radius:4px}pre{overflow-x:auto;padding:8px;border-radius:6px;background:rgba(127,127,127,.18)}pre code{background:none;padding:0}' +
    '.who{display:block;font-size:13px;font-weight:600;color:var(--mu)}' +
    '.err{background:var(--eb);color:var(--ef)}.pend{opacity:.75}' +
    '.note{align-self:center;font-size:13px;color:var(--mu);text-align:center}' +
    '.act{display:flex;gap:4px;margin-top:4px;flex-wrap:wrap}' +
    '.act button,.chips button,.tb{border:1px solid var(--bd);border-radius:8px;padding:4px 9px;font-size:14px;color:var(--fg);background:var(--bg)}' +
    '.act svg{width:16px;height:16px;fill:currentColor;vertical-align:-3px}.dn svg{transform:rotate(180deg)}' +
    '.act button[aria-pressed=true]{background:var(--c);color:var(--t);border-color:var(--c)}' +
    '.src{font-size:13px;margin-top:6px}.src ul{padding-left:18px}' +
    '.dots span{display:inline-block;width:7px;height:7px;margin-right:3px;border-radius:50%;background:var(--mu);animation:b 1s infinite}.dots span:nth-child(2){animation-delay:.15s}.dots span:nth-child(3){animation-delay:.3s}' +
    '@keyframes b{50%{opacity:.2}}' +
    '.chips{display:flex;flex-wrap:wrap;gap:6px;padding:0 12px 8px}' +
    '.tools{display:flex;gap:6px;padding:0 12px 6px;flex-wrap:wrap}.tools:not(:has(>:not([hidden]))){display:none}.tools form{display:flex;gap:6px;width:100%}' +
    '.tools input{flex:1;min-width:0;font-size:16px;padding:6px 8px;border:1px solid var(--bd);border-radius:8px;background:var(--bg)}' +
    '.compose{display:flex;gap:8px;padding:10px;border-top:1px solid var(--bd)}' +
    'textarea{flex:1;resize:none;font-size:16px;padding:8px;border:1px solid var(--bd);border-radius:8px;min-height:42px;max-height:120px;background:var(--bg)}::placeholder{color:var(--mu);opacity:1}' +
    '.send{border-radius:8px;padding:0 14px;background:var(--c);color:var(--t);font-weight:600}.send:disabled{opacity:.55;cursor:default}' +
    '@media (prefers-reduced-motion:reduce){*{animation:none!important;transition:none!important}}';

  // Black or white text on the owner's colour, whichever contrasts more (WCAG relative luminance).
  function textOn(hex) {
    var m = /^#?([0-9a-f]{6})$/i.exec(hex || '');
    if (!m) return '#fff';
    var n = parseInt(m[1], 16), L = [n >> 16, (n >> 8) & 255, n & 255].map(function (c) { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); });
    L = 0.2126 * L[0] + 0.7152 * L[1] + 0.0722 * L[2];
    return (L + 0.05) / 0.05 > 1.05 / (L + 0.05) ? '#000' : '#fff';
  }
  function safeColor(c) { return /^#[0-9a-f]{6}$/i.test(c || '') ? c : null; }

  var host = D.createElement('parley-chat');
  var root = host.attachShadow({ mode: 'open' });
  var sheet = new CSSStyleSheet(), vars = new CSSStyleSheet();
  sheet.replaceSync(CSS);
  root.adoptedStyleSheets = [sheet, vars];
  var color = safeColor(data.color) || '#2563eb', viewport = '';
  function paint() { vars.replaceSync(':host{--c:' + color + ';--t:' + textOn(color) + '}' + viewport); }
  paint();
  if (data.position == 'left') host.classList.add('l');

  function h(tag, attrs, kids) {
    var node = D.createElement(tag);
    for (var k in attrs || {}) {
      if (k == 'on') node.addEventListener('click', attrs.on);
      else if (attrs[k] != null) node.setAttribute(k, attrs[k]);
    }
    [].concat(kids == null ? [] : kids).forEach(function (c) { node.append(c); });
    return node;
  }
  function button(label, on, text, cls) { return h('button', { type: 'button', 'aria-label': label, title: label, on: on, class: cls }, text); }

  // Markdown to DOM nodes: text only ever reaches text nodes, never innerHTML.
  var INLINE = /(`+)([^`]+?)\1|\*\*(.+?)\*\*|__(.+?)__|\*(\S(?:.*?\S)?)\*|\b_(\S(?:.*?\S)?)_\b|\[([^\]\n]+)\]\(([^)\s]+)\)|(https?:\/\/[^\s<>()]*[^\s<>().,;:!?'"])/g;
  function link(url, label) {
    var u;
    try { u = new URL(url); } catch (e) { return label; }
    if (!/^(https?|mailto):$/.test(u.protocol)) return label;
    return h('a', { href: u.href, target: '_blank', rel: 'noopener noreferrer' }, label);
  }
  function inline(text, into) {
    var last = 0, m, re = new RegExp(INLINE.source, 'g');
    while ((m = re.exec(text))) {
      if (m.index > last) into.append(text.slice(last, m.index));
      last = re.lastIndex;
      if (m[2] != null) into.append(h('code', 0, m[2]));
      else if (m[3] || m[4]) into.append(inline(m[3] || m[4], h('strong')));
      else if (m[5] || m[6]) into.append(inline(m[5] || m[6], h('em')));
      else if (m[7]) into.append(link(m[8], m[7]));
      else into.append(link(m[9], m[9]));
    }
    into.append(text.slice(last));
    return into;
  }
  function markdown(text) {
    var out = D.createDocumentFragment(), lines = String(text).split('\n'), i = 0, para = [], list = null;
    function flush() {
      if (para.length) {
        var p = h('p');
        para.forEach(function (l, j) { if (j) p.append(h('br')); inline(l, p); });
        out.append(p); para = [];
      }
      list = null;
    }
    while (i < lines.length) {
      var line = lines[i++], m;
      if (/^\s*```/.test(line)) {
        flush();
        var code = [];
        while (i < lines.length && !/^\s*```/.test(lines[i])) code.push(lines[i++]);
        i++;
        out.append(h('pre', 0, h('code', 0, code.join('\n'))));
      } else if ((m = /^\s*(?:([-*+])|(\d+)[.)])\s+(.*)$/.exec(line))) {
        var tag = m[1] ? 'ul' : 'ol';
        if (para.length || !list || list.tagName.toLowerCase() != tag) { flush(); out.append(list = h(tag)); }
        list.append(inline(m[3], h('li')));
      } else if (!line.trim()) flush();
      else { if (list) flush(); para.push(line); }
    }
    flush();
    return out;
  }

  // The DOM: a launcher, and a panel built once.
  // Icons are SVG paths, not emoji: a host without an emoji font would show empty boxes.
  function icon(d) {
    var ns = 'http://www.w3.org/2000/svg', svg = D.createElementNS(ns, 'svg'), path = D.createElementNS(ns, 'path');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('aria-hidden', 'true');
    path.setAttribute('d', d);
    svg.append(path);
    return svg;
  }
  var THUMB = 'M1 21h4V9H1v12zm22-11a2 2 0 0 0-2-2h-6.3l1-4.6v-.3c0-.4-.2-.8-.5-1.1L14.2 1 7.6 7.6C7.2 8 7 8.5 7 9v10a2 2 0 0 0 2 2h9c.8 0 1.5-.5 1.8-1.2l3-7.1.2-.7v-2z';
  var badge = h('span', { class: 'badge', 'aria-hidden': 'true', hidden: '' });
  var launcher = h('button', { type: 'button', class: 'launch', 'aria-expanded': 'false', 'aria-haspopup': 'dialog', on: function () { panel.hidden ? open() : close(); } }, [icon('M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z'), badge]);
  title = h('h2', 0, T.title);
  var avatar = h('img', { alt: '', hidden: '' });
  var newBtn = button('', function () { restart(false); }, '+');
  var forgetBtn = button('', function () { restart(true); }, '⌫');
  var closeBtn = button('', close, '×');
  var bar = h('div', { class: 'bar', role: 'status', hidden: '' });
  var log = h('div', { class: 'log', role: 'log', 'aria-live': 'polite', tabindex: '0' });
  var chips = h('div', { class: 'chips', hidden: '' });
  var humanBtn = h('button', { type: 'button', class: 'tb', hidden: '', on: function () { send({ type: 'handoff' }); humanBtn.hidden = true; } });
  var emailInput = h('input', { type: 'email', required: '', autocomplete: 'email' });
  var emailForm = h('form', { hidden: '' }, [emailInput, h('button', { type: 'submit', class: 'tb' })]);
  var tools = h('div', { class: 'tools' }, [humanBtn, emailForm]);
  var input = h('textarea', { rows: '1', maxlength: '32000' });
  var sendBtn = h('button', { type: 'submit', class: 'send' });
  var form = h('form', { class: 'compose' }, [input, sendBtn]);
  var panel = h('div', { class: 'panel', role: 'dialog', hidden: '' }, [h('header', 0, [avatar, title, newBtn, forgetBtn, closeBtn]), bar, log, chips, tools, form]);
  root.append(panel, launcher);

  relabel = function () {
    var n = unread;
    launcher.setAttribute('aria-label', (panel.hidden ? T.open : T.close) + (n ? ' (' + n + ' ' + T.unread + ')' : ''));
    [[newBtn, T['new']], [forgetBtn, T.forget], [closeBtn, T.close]].forEach(function (p) { p[0].setAttribute('aria-label', p[1]); p[0].title = p[1]; });
    panel.setAttribute('aria-label', title.textContent);
    input.setAttribute('aria-label', T.input);
    input.placeholder = T.placeholder;
    humanBtn.textContent = T.human;
    emailInput.setAttribute('aria-label', T.email);
    emailInput.placeholder = T.email;
    emailForm.lastChild.textContent = T.send;
    sendBtn.textContent = streaming ? T.stop : T.send;
    sendBtn.setAttribute('aria-label', sendBtn.textContent);
    badge.textContent = n;
    badge.hidden = !n;
  };

  // Connection and conversation state.
  var ws = null, ready = false, attempt = 0, timer = 0, config = {}, unread = 0, visitor = load();
  var streaming = null, typing = null, inflight = null, outbox = [], frames = {}, bubbles = {}, listeners = {};
  var identity = null, blockedUntil = 0, waitTimer = 0, state = 'bot', current = null;
  relabel();

  function emit(name, payload) { (listeners[name] || []).forEach(function (fn) { try { fn(payload); } catch (e) { console.warn(e); } }); }
  function send(frame) { if (ws && ready && ws.readyState == 1) { ws.send(JSON.stringify(frame)); return true; } return false; }
  function scroll() { log.scrollTop = log.scrollHeight; }
  function status(text) { bar.textContent = text || ''; bar.hidden = !text; }
  function note(text) { var n = h('div', { class: 'note' }, text); log.append(n); scroll(); return n; }

  function renderBody(node, m) {
    node.textContent = '';
    if (m.author && m.role == 'agent') node.append(h('span', { class: 'who' }, m.author));
    if (m.role == 'user') node.append(m.text);
    else node.append(markdown(m.text || ''));
  }
  function bubble(m) {
    var node = h('div', { class: 'm ' + m.role });
    renderBody(node, m);
    if (m.id) bubbles[m.id] = node;
    log.append(node);
    if (m.role == 'assistant' && m.id) finish(node, m);
    scroll();
    return node;
  }
  // Feedback thumbs and sources under a finished assistant reply.
  function finish(node, m) {
    if (m.sources && m.sources.length) {
      var ul = h('ul');
      m.sources.forEach(function (s) { if (s && s.url) ul.append(h('li', 0, link(s.url, String(s.title || s.url)))); });
      node.append(h('div', { class: 'src' }, [h('strong', 0, T.sources), ul]));
    }
    if (!m.text || m.status == 'error') return;
    var thumbs = [[1, T.up, ''], [-1, T.down, 'dn']].map(function (t) {
      var b = button(t[1], function () {
        send({ type: 'feedback', message: m.id, value: t[0] });
        thumbs.forEach(function (o) { o.setAttribute('aria-pressed', String(o == b)); });
      }, icon(THUMB), t[2]);
      b.setAttribute('aria-pressed', String(m.feedback == t[0]));
      return b;
    });
    node.append(h('div', { class: 'act' }, thumbs));
  }
  function dots() { return h('div', { class: 'm assistant' }, h('span', { class: 'dots', role: 'img', 'aria-label': T.typing }, [h('span'), h('span'), h('span')])); }
  function showTyping() {
    typing = typing || dots();
    log.append(typing);
    scroll();
  }
  function hideTyping() { if (typing) typing.remove(); typing = null; }
  function setStreaming(id) { streaming = id; relabel(); }

  function setState(s, announce) {
    state = s || 'bot';
    humanBtn.hidden = state != 'bot' || !ready || config.handoff_timeout == null; // servers with handoff send a timeout
    clearTimeout(waitTimer);
    if (state == 'waiting') {
      if (announce) note(T.waiting);
      // Still waiting after the site's timeout: offer to continue by email.
      waitTimer = setTimeout(function () { if (state == 'waiting') { note(T.noagent); emailForm.hidden = false; } }, (config.handoff_timeout || 120) * 1000);
    } else if (announce) note(state == 'agent' ? T.agent : state == 'closed' ? T.closed : T.bot);
    if (state != 'waiting') emailForm.hidden = true;
  }

  function connect() {
    if (ws) return;
    clearTimeout(timer);
    if (!panel.hidden && !ready) status(attempt ? T.offline : T.connecting);
    try { ws = new WebSocket(wsURL); } catch (e) { ws = null; return; }
    ws.onopen = function () { ws.send(JSON.stringify({ type: 'hello', visitor: visitor })); };
    ws.onmessage = function (event) {
      var f;
      try { f = JSON.parse(event.data); } catch (e) { return; }
      handle(f);
    };
    ws.onclose = function () {
      // A reply cut off mid-stream: resend its message after reconnecting. The server replays a stored
      // reply, or asks the provider again if none was saved; the client id keeps the message single.
      if (current && outbox.indexOf(current) < 0) outbox.unshift(current);
      ws = null; ready = false; inflight = null; current = null; hideTyping(); setStreaming(null);
      humanBtn.hidden = true;
      if (!panel.hidden || outbox.length) status(T.offline);
      // Exponential backoff with jitter, capped at 30 s, so a restarted server is not stampeded.
      var delay = Math.min(30000, 500 * Math.pow(2, attempt++));
      timer = setTimeout(connect, delay / 2 + Math.random() * delay / 2);
    };
  }
  W.addEventListener('online', function () { if (!ws && (visitor || !panel.hidden)) { attempt = 0; connect(); } });

  function flush() {
    if (!ready || streaming || inflight || !outbox.length) return;
    var f = outbox[0];
    if (send(f)) {
      inflight = f.id;
      var b = bubbles[f.id];
      if (b) b.classList.remove('pend');
      showTyping();
    }
  }
  function forget(id) {
    outbox = outbox.filter(function (f) { return f.id != id; });
    if (inflight == id) inflight = null;
  }

  function handle(f) {
    var t = f.type;
    if (t == 'ready') {
      attempt = 0; ready = true; config = f.config || {};
      visitor = f.visitor; save(visitor);
      if (config.title && !titled) title.textContent = config.title;
      relabel();
      if (safeColor(config.color) && !data.color) { color = config.color; paint(); }
      if (config.position == 'left' && !data.position) host.classList.add('l');
      avatar.hidden = !/^https?:/.test(config.avatar || '');
      if (!avatar.hidden) avatar.src = config.avatar;
      status(config.available === false ? T.unconfigured : '');
      render(f.history || []);
      setState(config.state, false);
      if (identity) send(identity);
      emit('ready', { conversation: f.conversation });
      flush();
    } else if (t == 'start') {
      forget(f.reply_to);
      current = frames[f.reply_to];
      setStreaming(f.message);
      var node = bubbles[f.message];
      if (!node) {
        node = bubbles[f.message] = typing || dots();
        typing = null;
        log.append(node);
      }
      scroll();
    } else if (t == 'delta') {
      var b = bubbles[f.message];
      if (!b) return;
      b.x = (b.x || '') + f.text;
      renderBody(b, { role: 'assistant', text: b.x });
      scroll();
    } else if (t == 'end') {
      hideTyping();
      var e = bubbles[f.message];
      if (e) {
        if (f.status == 'error' && !f.text) { e.remove(); delete bubbles[f.message]; }
        else {
          var m = { id: f.message, role: 'assistant', text: f.text, status: f.status, sources: f.sources };
          renderBody(e, m);
          finish(e, m);
          if (f.status == 'stopped') note(T.stopped);
          arrived(m);
        }
      }
      setStreaming(null);
      current = null;
      flush();
    } else if (t == 'message') {
      if (bubbles[f.id]) return;
      bubble(f);
      arrived(f);
    } else if (t == 'status') {
      setState(f.state, true);
    } else if (t == 'error') {
      fail(f);
    }
  }
  function arrived(m) {
    if (panel.hidden) { unread++; relabel(); }
    emit('message', { id: m.id, role: m.role, text: m.text, author: m.author, status: m.status });
  }

  function fail(f) {
    var id = f.reply_to, frame = frames[id], c = f.code, user = bubbles[id];
    hideTyping();
    if (c == 'bad_request' && !id) { console.warn('Parley:', f.message); return; }
    forget(id);
    if (c == 'rate_limited' || c == 'too_long' || c == 'busy') {
      // Nothing was stored: give the text back to the visitor instead of losing it.
      if (user) { user.remove(); delete bubbles[id]; }
      if (frame && !input.value) input.value = frame.text;
      if (c == 'rate_limited') {
        var secs = Math.max(1, Math.ceil(+f.retry_after || 5));
        blockedUntil = Date.now() + secs * 1000;
        sendBtn.disabled = true;
        status(T.rate.replace('{n}', secs));
        setTimeout(function () { blockedUntil = 0; sendBtn.disabled = false; status(''); flush(); }, secs * 1000);
      } else note(f.message || T.error);
    } else if (c == 'quota_exceeded') {
      note(T.quota).classList.add('m', 'err');
    } else if (c == 'not_configured') {
      note(T.unconfigured);
    } else {
      var box = h('div', { class: 'm err', role: 'alert' }, T.error);
      if (frame) box.append(h('div', { class: 'act' }, button(T.retry, function () {
        box.remove();
        if (!outbox.some(function (o) { return o.id == id; })) outbox.push(frame);
        flush();
      }, T.retry)));
      log.append(box);
      scroll();
    }
    flush();
  }

  function render(history) {
    log.textContent = ''; bubbles = {}; typing = null;
    if (config.greeting) bubble({ role: 'assistant', text: config.greeting });
    history.forEach(bubble);
    // Messages not yet acknowledged stay on screen; skip one the server already stored before the drop.
    var lastUser = history.filter(function (m) { return m.role == 'user'; }).pop();
    outbox.forEach(function (f, i) {
      if (!(i == 0 && lastUser && lastUser.text == f.text)) bubble({ id: f.id, role: 'user', text: f.text }).classList.add('pend');
    });
    chips.textContent = '';
    (config.starters || []).forEach(function (q) { if (typeof q == 'string') chips.append(h('button', { type: 'button', on: function () { submit(q); } }, q)); });
    chips.hidden = !!history.length || !chips.firstChild;
  }

  function submit(text) {
    text = String(text || '').trim();
    if (!text || streaming || blockedUntil > Date.now()) return false;
    var id = 'c' + Date.now().toString(36) + Math.random().toString(36).slice(2, 10);
    var frame = { type: 'message', id: id, text: text };
    frames[id] = frame;
    outbox.push(frame);
    chips.hidden = true;
    bubble({ id: id, role: 'user', text: text });
    if (!ready) { bubbles[id].classList.add('pend'); bubbles[id].title = T.pending; status(T.offline); connect(); }
    flush();
    return true;
  }

  form.addEventListener('submit', function (e) {
    e.preventDefault();
    if (streaming) send({ type: 'stop' });
    else if (submit(input.value)) input.value = '';
  });
  input.addEventListener('keydown', function (e) {
    if (e.key == 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); if (!streaming && submit(input.value)) input.value = ''; }
  });
  emailForm.addEventListener('submit', function (e) {
    e.preventDefault();
    if (send({ type: 'contact', email: emailInput.value.trim() })) { emailForm.hidden = true; note(T.thanks); }
  });

  // New conversation, or forget me: drop the token so the next hello starts a fresh visitor.
  function restart(wipe) {
    outbox = []; inflight = null; current = null; hideTyping(); setStreaming(null);
    if (wipe) {
      visitor = null; save(null); identity = null;
      if (ws) { attempt = 0; ws.close(); } else connect();
      log.textContent = '';
    } else if (!send({ type: 'new_conversation' })) connect();
  }

  // Keep the input above the on-screen keyboard: size the full-screen panel to the visual viewport.
  var vv = W.visualViewport;
  function fit() {
    var full = W.innerWidth <= 480 && vv && !panel.hidden;
    var next = full ? '.panel{height:' + vv.height + 'px;top:' + vv.offsetTop + 'px}' : '';
    if (next != viewport) { viewport = next; paint(); }
    if (full) scroll();
  }
  if (vv) { vv.addEventListener('resize', fit); vv.addEventListener('scroll', fit); }

  function open() {
    if (!panel.hidden) return;
    panel.hidden = false;
    host.classList.add('o');
    unread = 0;
    launcher.setAttribute('aria-expanded', 'true');
    relabel(); fit();
    if (!ws) { attempt = 0; connect(); } else if (!ready) status(T.connecting);
    input.focus();
    scroll();
    emit('open');
  }
  function close() {
    if (panel.hidden) return;
    panel.hidden = true;
    host.classList.remove('o');
    launcher.setAttribute('aria-expanded', 'false');
    relabel(); fit();
    launcher.focus();
    emit('close');
  }
  panel.addEventListener('keydown', function (e) { if (e.key == 'Escape') { e.stopPropagation(); close(); } });

  var api = {
    v: 1,
    open: open,
    close: close,
    identify: function (who) {
      who = who || {};
      identity = { type: 'identify' };
      ['email', 'name', 'hash'].forEach(function (k) { if (who[k]) identity[k] = String(who[k]); });
      send(identity);
    },
    on: function (name, fn) { if (typeof fn == 'function') (listeners[name] = listeners[name] || []).push(fn); },
    strings: strings
  };
  // Calls made before the script loaded wait in Parley.q (the stub in docs/embedding.md): replay them.
  var queued = (W.Parley && W.Parley.q) || [];
  W.Parley = api;

  function mount() {
    D.body.append(host);
    queued.forEach(function (c) {
      var fn = api[c[0]];
      if (typeof fn == 'function') fn.apply(api, [].slice.call(c[1] || []));
    });
    if (data.open == 'true' || data.open === '') open();
    else if (visitor) connect(); // a returning visitor: resume, so replies and agents raise the badge
  }
  D.body ? mount() : D.addEventListener('DOMContentLoaded', mount);
})();
