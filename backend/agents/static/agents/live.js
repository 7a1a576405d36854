// Live admin pages for support agents: follow /ws/agent/… and refresh the marked parts of the page.
(function () {
  'use strict';
  var status = document.getElementById('parley-live');
  if (!status || !window.WebSocket) return;
  var ids = (status.getAttribute('data-swap') || '').split(' ').filter(Boolean);
  var url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + status.getAttribute('data-socket');
  var attempt = 0, timer = null, busy = false, again = false;

  function say(text, cls) { status.textContent = text; status.className = 'parley-live ' + (cls || ''); }

  // A checked row or a focused field means the agent is working: do not replace it under them.
  function working() {
    return !!document.querySelector('#changelist input.action-select:checked');
  }

  function refresh() {
    if (busy) { again = true; return; }
    if (working()) { say('New activity: reload the page to see it.', 'stale'); return; }
    busy = true;
    fetch(location.href, { credentials: 'same-origin', headers: { 'X-Requested-With': 'parley-live' } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, 'text/html');
        ids.forEach(function (id) {
          var now = document.getElementById(id), fresh = doc.getElementById(id);
          if (now && fresh) now.replaceWith(document.importNode(fresh, true));
          else if (fresh) location.reload();  // e.g. the first conversation of an empty inbox
        });
        // The admin binds its action checkboxes on load: bind the fresh ones too.
        var boxes = document.querySelectorAll('tr input.action-select');
        if (window.Actions && boxes.length) window.Actions(boxes);
        say('Live', 'on');
      })
      .catch(function () { say('Live update failed; reload the page.', 'stale'); })
      .then(function () { busy = false; if (again) { again = false; refresh(); } });
  }

  function connect() {
    var ws = new WebSocket(url);
    // Whatever happened between rendering the page and this socket opening is fetched once.
    ws.onopen = function () { attempt = 0; refresh(); };
    ws.onmessage = function (event) {
      var f;
      try { f = JSON.parse(event.data); } catch (e) { return; }
      if (!f.kind) return;
      clearTimeout(timer);
      timer = setTimeout(refresh, 150);  // a burst of events refreshes once
    };
    ws.onclose = function () {
      say('Reconnecting…', 'off');
      var delay = Math.random() * Math.min(30000, 1000 * Math.pow(2, attempt++));
      setTimeout(connect, delay);
    };
  }
  connect();
})();
