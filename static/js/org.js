// Org management pages: confirm destructive forms, show only the scope field a role needs.
(function () {
  "use strict";

  document.addEventListener("submit", function (ev) {
    const form = ev.target.closest("form[data-confirm]");
    if (form && !window.confirm(form.dataset.confirm)) ev.preventDefault();
  });

  const role = document.getElementById("user-role");
  if (role) {
    const scoped = document.querySelectorAll("#user-create [data-scope]");
    const sync = function () {
      scoped.forEach(function (label) {
        const on = label.dataset.scope === role.value;
        label.hidden = !on;
        label.querySelectorAll("input, select").forEach(function (el) {
          el.disabled = !on;
          el.required = on;
        });
      });
    };
    role.addEventListener("change", sync);
    sync();
  }
})();
