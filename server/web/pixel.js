/* postbacks pixel: the paid click a visitor landed with, under a first-party anonymous id; identify at sign-up. */
(function () {
  "use strict";
  var YEAR = 31536000, WEEK = 604800, warned = false;
  function warn(message) {
    if (!warned && window.console) { warned = true; console.warn("postbacks pixel: " + message); }
  }
  function cookie(name) {
    var m = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : null;
  }
  function stored(name) {
    try { return cookie(name) || window.localStorage.getItem(name); } catch (e) { return cookie(name); }
  }
  function store(name, value, maxAge) {
    document.cookie = name + "=" + encodeURIComponent(value) + "; Max-Age=" + maxAge + "; Path=/; SameSite=Lax" +
      (location.protocol === "https:" ? "; Secure" : "");
    if (cookie(name) !== value) { try { window.localStorage.setItem(name, value); } catch (e) { /* neither */ } }
  }
  function randomId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var b = new Uint8Array(16), s = "";
    crypto.getRandomValues(b);
    for (var i = 0; i < 16; i++) s += (b[i] + 256).toString(16).slice(1);
    return s;
  }
  function setup() {
    var script = document.currentScript || document.querySelector("script[data-key][src*='pixel.js']");
    var game = script && script.getAttribute("data-game"), key = script && script.getAttribute("data-key");
    if (!game || !key || !/^pbk_/.test(key)) {
      warn("the tag needs data-game and data-key (a publishable key, pbk_...); nothing is sent");
      return function () {};
    }
    var endpoint = new URL(script.src, location.href).origin + "/postbacks.v1.EventService/IngestEvent";
    var anonymousId = stored("pb_aid") || randomId();
    store("pb_aid", anonymousId, YEAR);  // one year from the last visit

    function send(event, retried) {
      event.anonymousId = anonymousId;
      fetch(endpoint, {
        method: "POST", keepalive: true, credentials: "omit",
        headers: {"content-type": "application/json", "authorization": "Bearer " + key},
        body: JSON.stringify({parent: "games/" + game, event: event})
      }).then(function (response) {
        if (response.status >= 400 && response.status < 500 && response.status !== 429) {
          warn("event refused (HTTP " + response.status + "): is this origin listed on the key?");
        }
      }, function () {
        if (!retried) setTimeout(function () { send(event, true); }, 1000);
      });
    }

    // One ad_click per click id; its event id and time are kept with it, so a reload resends the same event.
    var query = new URLSearchParams(location.search);
    [["ttclid", "NETWORK_TIKTOK", "pb_clk_tiktok"], ["rdt_cid", "NETWORK_REDDIT", "pb_clk_reddit"]].forEach(function (p) {
      var clickId = query.get(p[0]);
      if (!clickId) return;
      var kept = (stored(p[2]) || "").split(" ");
      if (kept[0] !== encodeURIComponent(clickId)) kept = [encodeURIComponent(clickId), randomId(), new Date().toISOString()];
      store(p[2], kept.join(" "), WEEK);
      send({eventId: kept[1], eventTime: kept[2],
            adClick: {network: p[1], clickId: clickId, landingUrl: location.href.slice(0, 2048)}});
    });

    return function (command, fields) {
      if (command !== "identify" || !fields || !fields.userId) {
        warn("use postbacks(\"identify\", {userId: ..., email: ...})");
        return;
      }
      send({eventId: randomId(), eventTime: new Date().toISOString(), userId: String(fields.userId),
            email: fields.email ? String(fields.email) : "", identify: {}});
    };
  }
  var queued = (window.postbacks && window.postbacks.q) || [], handle;
  try { handle = setup(); } catch (e) { warn("could not start: " + e); handle = function () {}; }
  window.postbacks = function () {
    try { handle.apply(null, arguments); } catch (e) { warn("could not send: " + e); }
  };
  for (var i = 0; i < queued.length; i++) window.postbacks.apply(null, queued[i]);
})();
