// The console's only script: conveniences, never needed to act (every page works without it).
(function () {
  "use strict";
  // Overview: reload every 10 s while the box is ticked (remembered in this tab).
  var box = document.getElementById("autorefresh");
  if (box) {
    box.checked = sessionStorage.getItem("tocsin-autorefresh") === "1";
    box.addEventListener("change", function () {
      sessionStorage.setItem("tocsin-autorefresh", box.checked ? "1" : "0");
      if (box.checked) { location.reload(); }
    });
    if (box.checked) { setTimeout(function () { location.reload(); }, 10000); }
  }
  // A running bulk replay's page follows its progress.
  var running = document.querySelector("[data-refresh]");
  if (running) {
    setTimeout(function () { location.reload(); }, 1000 * Number(running.dataset.refresh));
  }
  // Template preview: changing the template picks its locales (a new page); the rest
  // renders once a template and a sample are chosen.
  var form = document.querySelector("form[data-autosubmit]");
  if (form) {
    form.addEventListener("change", function (ev) {
      if (ev.target.name === "template") { form.elements.locale.value = ""; }
      if (form.elements.template.value && form.elements.sample.value || ev.target.name === "template") {
        form.submit();
      }
    });
  }
})();
