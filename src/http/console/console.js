// The console's one script, for niceties only: every page works without it.
// - Each <time datetime> reads in the viewer's own time zone and locale
//   (the server writes UTC; the UTC text stays as the tooltip).
// - Each "Copy" button (hidden until this script shows it) copies the text
//   of the element its data-copy names, e.g. a key shown once.
(function () {
  "use strict";
  var local = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short"
  });
  document.querySelectorAll("time[datetime]").forEach(function (t) {
    var d = new Date(t.getAttribute("datetime"));
    if (isNaN(d.getTime())) return;
    var ago = t.textContent.match(/ \([^)]*\)$/);
    t.title = t.textContent;
    t.textContent = local.format(d) + (ago ? ago[0] : "");
  });
  document.querySelectorAll("button[data-copy]").forEach(function (b) {
    var source = document.getElementById(b.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) return;
    b.hidden = false;
    b.addEventListener("click", function () {
      navigator.clipboard.writeText(source.textContent.trim()).then(
        function () { b.textContent = "Copied"; },
        function () { b.textContent = "Copy failed: select the text instead"; }
      );
    });
  });
})();
