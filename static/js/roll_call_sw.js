// The roll call's service worker (served as /live/roll-call-sw.js, scope /live/).
// Network first; when the network is gone, the roll-call page, its roster and its assets
// come from the cache the page filled (see roll_call.js), so a reload offline loses nothing.
// Every other request passes through untouched.
"use strict";
const CACHE = "yuanjiao-roll-call-v1";
const ROLL_CALL = /^\/live\/\d+\/site\/\d+\/roll-call(\/state\.json)?$/;

self.addEventListener("install", function () { self.skipWaiting(); });
self.addEventListener("activate", function (event) { event.waitUntil(self.clients.claim()); });

function fromCache(request) {
  return caches.open(CACHE).then(function (cache) {
    return cache.match(request, { ignoreSearch: true });
  }).then(function (hit) {
    if (!hit) return Response.error();
    // Tell the page this answer is not the server's (its clock must not be measured on it).
    const headers = new Headers(hit.headers);
    headers.set("X-Yuanjiao-Offline", "1");
    return hit.blob().then(function (body) {
      return new Response(body, { status: hit.status, statusText: hit.statusText, headers: headers });
    });
  });
}

self.addEventListener("fetch", function (event) {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  const rollCall = ROLL_CALL.test(url.pathname);
  if (!rollCall && !url.pathname.startsWith("/static/")) return;
  event.respondWith(fetch(request).then(function (response) {
    if (rollCall && response.ok && !response.redirected) {
      const copy = response.clone();
      caches.open(CACHE).then(function (cache) { cache.put(url.pathname, copy); });
    }
    return response;
  }).catch(function () { return fromCache(request); }));
});
