// The attendance dashboard's video links: each connected site's layer of the ladder, its
// loss and round trip (from its RTCP receiver reports), and a choice to pin its layer.
// Polls GET /api/v1/occurrences/<id>/live; pins with PUT .../live/sites/<resource>/layer.
(function () {
  "use strict";
  const panel = document.getElementById("live-links");
  if (!panel || panel.dataset.ready) return;
  panel.dataset.ready = "1";
  const body = panel.querySelector("tbody");
  const table = panel.querySelector(".live-links-table");
  const empty = panel.querySelector(".live-links-empty");
  const message = panel.querySelector(".live-links-message");
  const rows = {};
  const LAYERS = ["high", "low", "audio"];
  let timer = null;

  function layerName(layer) {
    if (!layer) return "–";
    return panel.dataset["layer" + layer[0].toUpperCase() + layer.slice(1)] || layer;
  }

  function pinSelect(resource) {
    const select = document.createElement("select");
    select.className = "live-pin";
    [""].concat(LAYERS).forEach(function (layer) {
      const option = document.createElement("option");
      option.value = layer;
      option.textContent = layer ? layerName(layer) : panel.dataset.auto;
      select.appendChild(option);
    });
    select.addEventListener("change", function () {
      const layer = select.value || null;
      select.disabled = true;
      window.apiFetch(panel.dataset.pinUrl.replace("{resource}", encodeURIComponent(resource)),
        { method: "PUT", json: { layer: layer } })
        .then(function () {
          message.textContent = layer ? panel.dataset.pinDone : panel.dataset.unpinDone;
          refresh();
        })
        .catch(function (err) { message.textContent = err.message; })
        .then(function () { select.disabled = false; });
    });
    return select;
  }

  function rowFor(site) {
    let tr = rows[site.resource_id];
    if (tr) return tr;
    tr = document.createElement("tr");
    tr.dataset.resource = site.resource_id;
    for (let i = 0; i < 5; i++) tr.appendChild(document.createElement("td"));
    tr.children[1].className = "live-link-layer";
    tr.children[2].className = "live-link-loss";
    tr.children[3].className = "live-link-rtt";
    if (site.served_by === "origin" || !site.served_by) tr.children[4].appendChild(pinSelect(site.resource_id));
    rows[site.resource_id] = tr;
    return tr;
  }

  function render(live) {
    const sites = (live.state === "live" ? live.sites || [] : [])
      .filter(function (s) { return s.resource_id; });
    const seen = {};
    sites.forEach(function (s) {
      const tr = rowFor(s);
      seen[s.resource_id] = true;
      tr.dataset.layer = s.layer || "";
      tr.dataset.pinned = s.pinned || "";
      tr.children[0].textContent = s.site_name || s.member_name || s.user_name || s.label || s.resource_id;
      let layer = layerName(s.layer);
      if (s.pinned) layer += " · " + panel.dataset.pinned;
      tr.children[1].textContent = layer;
      tr.children[2].textContent = typeof s.loss === "number" ? s.loss.toFixed(1) + "%" : "–";
      tr.children[3].textContent = typeof s.rtt_ms === "number" ? Math.round(s.rtt_ms) + " ms" : "–";
      const select = tr.querySelector("select");
      if (select && document.activeElement !== select && !select.disabled) select.value = s.pinned || "";
      body.appendChild(tr);  // in the server's order
    });
    Object.keys(rows).forEach(function (id) {
      if (!seen[id]) { rows[id].remove(); delete rows[id]; }
    });
    table.hidden = !sites.length;
    empty.hidden = !!sites.length;
    panel.dataset.state = live.state || "";
  }

  function refresh() {
    clearTimeout(timer);
    return window.apiFetch(panel.dataset.liveUrl)
      .then(function (live) {
        render(live);
        timer = setTimeout(refresh, live.state === "live" ? 3000 : 10000);
      })
      .catch(function () { timer = setTimeout(refresh, 10000); });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", refresh); else refresh();
})();
