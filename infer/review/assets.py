"""The review app's stylesheet and script, served from memory (``/static/review.css``,
``/static/review.js``): no file is read to serve them.

Keys (ignored while typing in a field; Esc leaves it): j / k the next / previous alert of the
queue, c confirm, d dismiss, r reopen, n write a note. The page records on ``<body>`` whether it
loaded cleanly (``data-ready``, ``data-errors``), for automated checks.
"""

from __future__ import annotations

CSS = """
:root{--bg:#0f1216;--panel:#171c22;--line:#2a323c;--text:#e6e9ee;--muted:#97a1ad;
--accent:#00e5ff;--high:#ff5a36;--mid:#ffb020;--ok:#3ecf8e;--low:#5b6573}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--text);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
a{color:var(--accent)}
header{padding:14px 24px;border-bottom:1px solid var(--line);display:flex;flex-wrap:wrap;
gap:10px 24px;align-items:center;background:linear-gradient(180deg,#161c24,#0f1216)}
h1{margin:0;font-size:20px;font-weight:650} h1 span{color:var(--accent)}
h2{margin:0 0 4px;font-size:18px;word-break:break-word}
h3{font-size:12px;margin:18px 0 6px;color:var(--muted);text-transform:uppercase;
letter-spacing:1.1px}
.sub{color:var(--muted);font-size:13px;overflow-wrap:anywhere}
.stats{display:flex;flex-wrap:wrap;gap:8px}
.stat{background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:4px 12px;
text-decoration:none;color:var(--text)}
.stat b{font-size:17px;margin-right:6px} .stat span{color:var(--muted);font-size:12px}
.stat.current{border-color:var(--accent)}
.exports{margin-left:auto;display:flex;gap:8px;align-items:center}
.button,button{background:#222a33;color:var(--text);border:1px solid var(--line);
border-radius:6px;padding:6px 12px;font:inherit;cursor:pointer;text-decoration:none}
button:disabled{opacity:.35;cursor:default}
button.confirm{border-color:var(--ok)} button.dismiss{border-color:var(--high)}
kbd{border:1px solid var(--line);border-radius:4px;padding:0 5px;font-size:11px;
color:var(--muted);background:#11161b}
.layout{display:grid;grid-template-columns:340px minmax(0,1fr);min-height:calc(100vh - 120px)}
aside{border-right:1px solid var(--line);padding:12px;overflow-y:auto;max-height:calc(100vh - 70px)}
.filters{display:grid;grid-template-columns:1fr 1fr;gap:6px;margin-bottom:10px}
.filters label{display:flex;flex-direction:column;font-size:11px;color:var(--muted);gap:2px}
.filters .wide{grid-column:1 / -1}
.filters input,.filters select{width:100%}
input,select,textarea{background:#0b0e12;color:var(--text);border:1px solid var(--line);
border-radius:5px;padding:5px 7px;font:inherit;min-width:0}
#queue{list-style:none;margin:0;padding:0}
#queue li a{display:grid;grid-template-columns:1fr auto;gap:0 8px;padding:7px 9px;
border-radius:6px;color:var(--text);text-decoration:none;border:1px solid transparent}
#queue li a:hover{background:var(--panel)}
#queue li.selected a{background:var(--panel);border-color:var(--accent)}
#queue .qname{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
#queue .qmeta{grid-column:1 / -1;color:var(--muted);font-size:12px}
.score{font-weight:700;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;
border:1px solid var(--line);color:var(--muted)}
.badge.new{color:#111;background:var(--high);border-color:var(--high)}
.badge.ongoing{color:#111;background:var(--mid);border-color:var(--mid)}
.badge.confirmed{color:#111;background:var(--ok);border-color:var(--ok)}
#detail{padding:14px 22px 30px;min-width:0}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:8px;margin:12px 0}
.fact{background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:6px 10px}
.fact span{display:block;color:var(--muted);font-size:11px} .fact b{font-weight:600}
.coords{display:flex;gap:6px;flex-wrap:wrap;align-items:center;margin:6px 0 12px}
.coords input{width:210px;font-variant-numeric:tabular-nums}
.crops{display:flex;gap:12px;flex-wrap:wrap}
figure{margin:0;max-width:100%} figure img{display:block;width:300px;max-width:100%;height:auto;
image-rendering:pixelated;border-radius:4px;border:1px solid var(--line);background:#000}
figcaption{color:var(--muted);font-size:12px;margin-top:4px}
.none{color:var(--muted);background:var(--panel);border:1px dashed var(--line);border-radius:8px;
padding:14px}
.decide{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-end;margin:14px 0 0}
.decide textarea{flex:1 1 320px;min-height:40px;max-width:640px}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
th,td{padding:4px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{color:var(--muted);font-weight:600}
.flash{margin:10px 24px 0;padding:8px 12px;border-radius:8px;background:#11261c;
border:1px solid var(--ok)}
.error-box{max-width:720px;margin:60px auto;padding:20px 24px;background:var(--panel);
border:1px solid var(--high);border-radius:10px}
.error-box h1{margin-bottom:10px}
footer{color:var(--muted);font-size:12px;padding:10px 24px 20px}
#page-errors{color:#ff8080;white-space:pre-wrap}
@media (max-width:800px){.layout{grid-template-columns:minmax(0,1fr)}
aside{border-right:0;border-bottom:1px solid var(--line);max-height:40vh}}
"""

JS = """
(function () {
  "use strict";
  window.__reviewErrors = window.__reviewErrors || [];
  window.addEventListener("error", function (event) {
    window.__reviewErrors.push(String(event.message));
  });
  var body = document.body;
  var form = document.getElementById("decision");
  var note = document.getElementById("note");
  var analyst = document.getElementById("analyst");
  var KEY = "groundbreak-review-analyst";
  if (analyst) {
    try {
      var saved = window.localStorage.getItem(KEY);
      if (saved) { analyst.value = saved; }
      analyst.addEventListener("change", function () {
        window.localStorage.setItem(KEY, analyst.value.trim());
      });
    } catch (err) { /* storage off: the server's name is used */ }
  }
  function press(action) {
    if (!form) { return; }
    var button = form.querySelector("button[value='" + action + "']");
    if (button && !button.disabled) { button.click(); }
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var target = event.target;
    var tag = target && target.tagName;
    if (tag === "TEXTAREA" || tag === "INPUT" || tag === "SELECT") {
      if (event.key === "Escape") { target.blur(); }
      return;
    }
    if (event.key === "j" && body.dataset.next) {
      window.location.href = body.dataset.next;
    } else if (event.key === "k" && body.dataset.prev) {
      window.location.href = body.dataset.prev;
    } else if (event.key === "c") {
      press("confirm");
    } else if (event.key === "d") {
      press("dismiss");
    } else if (event.key === "r") {
      press("reopen");
    } else if (event.key === "n" && note) {
      event.preventDefault();
      note.focus();
    } else {
      return;
    }
  });
  var copy = document.getElementById("copy-coords");
  if (copy) {
    copy.addEventListener("click", function () {
      var field = document.getElementById("coords");
      field.select();
      var done = function () { copy.textContent = "Copied"; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(done, function () {
          document.execCommand("copy"); done();
        });
      } else {
        document.execCommand("copy"); done();
      }
    });
  }
  if (form && analyst) {
    form.addEventListener("submit", function () {
      var field = form.querySelector("input[name='analyst']");
      if (field) { field.value = analyst.value.trim(); }
    });
  }
  var selected = document.querySelector("#queue li.selected");
  if (selected && selected.scrollIntoView) { selected.scrollIntoView({block: "nearest"}); }
  function ready() {
    var images = Array.prototype.slice.call(document.images);
    var broken = images.filter(function (img) { return !(img.complete && img.naturalWidth > 0); });
    body.setAttribute("data-images", String(images.length));
    body.setAttribute("data-broken-images", String(broken.length));
    body.setAttribute("data-errors", String(window.__reviewErrors.length));
    body.setAttribute("data-ready", "true");
  }
  if (document.readyState === "complete") { ready(); } else {
    window.addEventListener("load", ready);
  }
}());
"""
