// adtally dashboard: a static app over the /v1 JSON API.
// Signing in posts the API key once to /v1/session and forgets it: the server answers with
// an HttpOnly session cookie (no script here can read it) and a CSRF token, which this
// script keeps in memory only and sends as X-CSRF-Token with every write. A reloaded page
// asks GET /v1/session for the token again. Nothing is kept in sessionStorage or
// localStorage. Every value from the server reaches the page through textContent or
// attributes set by h(): nothing is parsed as HTML.
(function () {
  "use strict";

  var csrf = null; // the session's CSRF token; null when signed out
  var main = document.getElementById("main");
  var nav = document.getElementById("nav");
  var toastBox = document.getElementById("toast");
  var me = null; // {role:"admin"} or the advertiser
  var advertisersById = null; // admin: id -> advertiser (time zones, names)
  var generation = 0; // a newer navigation discards the answers of older ones

  // ---- DOM ---------------------------------------------------------------------------

  function h(tag, attrs) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined || v === false) return;
        if (k.slice(0, 2) === "on") e.addEventListener(k.slice(2), v);
        else if (k === "class") e.className = v;
        else if (k === "value" || k === "checked" || k === "selected") e[k] = v;
        else e.setAttribute(k, v === true ? "" : String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) append(e, arguments[i]);
    return e;
  }
  function append(e, kid) {
    if (kid === null || kid === undefined || kid === false) return;
    if (Array.isArray(kid)) kid.forEach(function (k) { append(e, k); });
    else e.appendChild(typeof kid === "object" ? kid : document.createTextNode(String(kid)));
  }
  function show() {
    main.textContent = "";
    for (var i = 0; i < arguments.length; i++) append(main, arguments[i]);
  }
  function toast(text, bad) {
    toastBox.textContent = text;
    toastBox.className = bad ? "show bad" : "show";
    clearTimeout(toast.t);
    toast.t = setTimeout(function () { toastBox.className = ""; }, 4000);
  }

  // ---- formatting --------------------------------------------------------------------

  var intFmt = new Intl.NumberFormat("en-US");
  var moneyFmt = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  function num(n) { return n === null || n === undefined ? "—" : intFmt.format(n); }
  function money(micros) { return micros === null || micros === undefined ? "—" : moneyFmt.format(micros / 1e6); }
  function pct(p) { return p === null || p === undefined ? "—" : p.toFixed(2) + "%"; }
  function toMicros(text) {
    var m = /^\s*(\d{1,9})(?:[.,](\d{0,6}))?\s*$/.exec(text || "");
    if (!m) return null;
    return Number(m[1]) * 1e6 + Number((m[2] || "").padEnd(6, "0"));
  }
  function microsInput(micros) {
    if (micros === null || micros === undefined) return "";
    var s = (micros / 1e6).toFixed(6).replace(/0+$/, "");
    return s.replace(/\.$/, "");
  }
  function label(status) { return String(status || "").replace(/_/g, " "); }
  function badge(status) { return h("span", { class: "badge s-" + status }, label(status)); }

  // ---- API ---------------------------------------------------------------------------

  function ApiError(status, code, message) {
    this.status = status;
    this.code = code;
    this.message = message;
  }
  function safe(method) { return method === "GET" || method === "HEAD"; }
  function api(method, path, body, retried) {
    var headers = {};
    if (!safe(method) && csrf) headers["X-CSRF-Token"] = csrf;
    var init = { method: method, headers: headers, credentials: "same-origin", cache: "no-store" };
    if (body !== undefined) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (r) {
      return r.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        var err = (data && data.error) || {};
        if (r.status === 401 && path !== "/v1/session" && me) {
          signOut("Your session has ended. Sign in again.", true);
        }
        if (r.status === 403 && err.code === "csrf" && !retried) {
          // Signing in from another tab replaced this tab's session (and its token):
          // take the current one, then try once more if it is still the same account.
          return refreshSession().then(function () { return api(method, path, body, true); });
        }
        if (!r.ok) {
          throw new ApiError(r.status, err.code || "http_" + r.status, err.message || "The server answered " + r.status);
        }
        return data;
      });
    });
  }
  function sameAccount(session) {
    // /v1/me answers {role:"admin"} for the operator, the advertiser (with its id) otherwise.
    return !!me && (session.role === "admin" ? isAdmin() : !isAdmin() && session.advertiser_id === me.id);
  }
  function refreshSession() {
    return get("/v1/session").then(function (session) {
      if (!sameAccount(session)) {
        location.reload();
        throw new ApiError(409, "session_changed", "Signed in as another account in another tab.");
      }
      csrf = session.csrf_token;
    }, function (e) {
      if (e.status === 401) signOut("Your session has ended. Sign in again.", true);
      throw e;
    });
  }
  function get(path) { return api("GET", path); }
  function post(path, body) { return api("POST", path, body === undefined ? {} : body); }

  function downloadCsv(path, filename) {
    return fetch(path, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (!r.ok) throw new ApiError(r.status, "csv", "The CSV could not be downloaded");
        return r.blob();
      })
      .then(function (blob) {
        var url = URL.createObjectURL(blob);
        var a = h("a", { href: url, download: filename });
        document.body.appendChild(a);
        a.click();
        a.remove();
        setTimeout(function () { URL.revokeObjectURL(url); }, 10000);
      })
      .catch(function (e) { toast(e.message, true); });
  }
  function csvButton(path, filename) {
    return h("button", { type: "button", class: "secondary small", "data-csv": path,
      onclick: function () { downloadCsv(path, filename); } }, "Download CSV");
  }

  // ---- sign in -----------------------------------------------------------------------

  // Set while DELETE /v1/session is on its way: until it has ended the session, the
  // cookie would still sign a new page in.
  var signingOut = null;

  // `ended`: the server already ended the session (a 401), so there is nothing to delete.
  function signOut(message, ended) {
    var token = csrf;
    csrf = null;
    me = null;
    advertisersById = null;
    generation++; // answers still on their way belong to the signed-out session
    if (ended || !token) return showSignedOut(message);
    signingOut = fetch("/v1/session", { method: "DELETE", headers: { "X-CSRF-Token": token },
      credentials: "same-origin", cache: "no-store" })
      .then(function (r) { if (!r.ok) toast("Signing out failed (" + r.status + ").", true); },
        function () { toast("Signing out failed: the server did not answer.", true); })
      .then(function () { signingOut = null; showSignedOut(message); });
    return signingOut;
  }
  function showSignedOut(message) {
    if (location.hash && location.hash !== "#/") {
      // The hash change renders the sign-in page; rendering it here too would replace
      // a form someone may already be typing in.
      pendingMessage = message;
      location.hash = "#/";
    } else {
      signInPage(message);
    }
  }

  var pendingMessage = null;
  function signInPage(message) {
    message = message || pendingMessage;
    pendingMessage = null;
    nav.textContent = "";
    var input = h("input", { id: "key", name: "key", type: "password", autocomplete: "off", required: true, spellcheck: "false" });
    var error = h("p", { class: "error", role: "alert" }, message || "");
    show(h("section", { class: "signin card" },
      h("h1", null, "Sign in"),
      h("p", null, "Use the API key the operator gave you (advertiser), or the admin key."),
      h("form", { id: "signin", onsubmit: function (ev) {
        ev.preventDefault();
        // The key goes to the server once; the page that follows replaces this form.
        api("POST", "/v1/session", { api_key: input.value.trim() }).then(function (session) {
          csrf = session.csrf_token;
          return get("/v1/me");
        }).then(function (who) {
          me = who;
          route();
        }, function (e) {
          csrf = null;
          error.textContent = e.status === 401 ? "This key is not valid." : e.message;
        });
      } },
        h("label", { for: "key" }, "API key"), input,
        h("button", { type: "submit" }, "Sign in")),
      error));
    input.focus();
  }

  function isAdmin() { return me && me.role === "admin"; }

  function renderNav(active) {
    nav.textContent = "";
    var links = [["#/", "Campaigns", "campaigns"]];
    if (isAdmin()) {
      links.push(["#/moderation", "Moderation", "moderation"], ["#/advertisers", "Advertisers", "advertisers"],
        ["#/placements", "Placements", "placements"]);
    } else {
      links.push(["#/ledger", "Billing", "ledger"]);
    }
    links.forEach(function (l) {
      append(nav, h("a", { href: l[0], "aria-current": l[2] === active ? "page" : null }, l[1]));
    });
    append(nav, h("span", { class: "who" }, isAdmin() ? "Operator" : me.name));
    append(nav, h("button", { type: "button", class: "link", id: "signout", onclick: function () { signOut("Signed out."); } }, "Sign out"));
  }

  // ---- routing -----------------------------------------------------------------------

  function parseHash() {
    var raw = location.hash.replace(/^#/, "") || "/";
    var qi = raw.indexOf("?");
    var path = qi < 0 ? raw : raw.slice(0, qi);
    var query = new URLSearchParams(qi < 0 ? "" : raw.slice(qi + 1));
    return { path: path, query: query };
  }

  function route() {
    if (signingOut) return signingOut;
    if (!me) {
      // A new or reloaded page: the cookie may still hold a session.
      return get("/v1/session").then(function (session) {
        csrf = session.csrf_token;
        return get("/v1/me");
      }).then(function (who) { me = who; route(); }, function (e) {
        csrf = null;
        if (e && e.status === 401) signInPage();
        else failed(e);
      });
    }
    if (isAdmin() && !advertisersById) {
      return get("/v1/advertisers").then(function (list) {
        advertisersById = {};
        list.items.forEach(function (a) { advertisersById[a.id] = a; });
        route();
      }, failed);
    }
    var r = parseHash();
    var gen = ++generation;
    var m;
    var done;
    if (r.path === "/") { renderNav("campaigns"); done = overview(r.query, gen); }
    else if (r.path === "/campaigns/new") { renderNav("campaigns"); done = campaignForm(null, gen); }
    else if ((m = /^\/campaigns\/(\d+)$/.exec(r.path))) { renderNav("campaigns"); done = campaignPage(m[1], r.query, gen); }
    else if ((m = /^\/campaigns\/(\d+)\/edit$/.exec(r.path))) { renderNav("campaigns"); done = campaignForm(m[1], gen); }
    else if ((m = /^\/campaigns\/(\d+)\/ads\/new$/.exec(r.path))) { renderNav("campaigns"); done = adForm(m[1], null, gen); }
    else if ((m = /^\/ads\/(\d+)\/edit$/.exec(r.path))) { renderNav("campaigns"); done = adForm(null, m[1], gen); }
    else if (r.path === "/ledger" && !isAdmin()) { renderNav("ledger"); done = ledgerPage(gen); }
    else if (r.path === "/moderation" && isAdmin()) { renderNav("moderation"); done = moderationPage(gen); }
    else if (r.path === "/advertisers" && isAdmin()) { renderNav("advertisers"); done = advertisersPage(gen); }
    else if (r.path === "/placements" && isAdmin()) { renderNav("placements"); done = placementsPage(gen); }
    else { renderNav(""); notFound("This page does not exist."); }
    if (done && done.catch) done.catch(function (e) { if (gen === generation) failed(e); });
    main.focus({ preventScroll: true });
  }

  function notFound(text) {
    show(h("section", { class: "card empty", id: "not-found" }, h("h1", null, "Not found"), h("p", null, text),
      h("p", null, h("a", { href: "#/" }, "Back to campaigns"))));
  }
  function failed(e) {
    if (e && e.status === 404) return notFound("It may have been removed, or it belongs to another account.");
    show(h("section", { class: "card empty" }, h("h1", null, "Something went wrong"),
      h("p", { role: "alert" }, (e && e.message) || String(e))));
  }

  // ---- ranges (in the advertiser's time zone) -----------------------------------------

  var RANGES = [["today", "Today"], ["yesterday", "Yesterday"], ["last_7_days", "Last 7 days"],
    ["last_30_days", "Last 30 days"], ["lifetime", "Lifetime"], ["custom", "Custom"]];

  function rangeOf(query) {
    var from = query.get("from"), to = query.get("to");
    if (from && to) return { range: "custom", from: from, to: to };
    var r = query.get("range");
    return { range: RANGES.some(function (x) { return x[0] === r && r !== "custom"; }) ? r : "last_7_days" };
  }
  function rangeParams(rg) {
    return rg.range === "custom" ? "from=" + encodeURIComponent(rg.from) + "&to=" + encodeURIComponent(rg.to) : "range=" + rg.range;
  }
  function today(tz) {
    try { return new Intl.DateTimeFormat("en-CA", { timeZone: tz || "UTC" }).format(new Date()); }
    catch (e) { return new Date().toISOString().slice(0, 10); }
  }
  function addDays(date, n) {
    var d = new Date(date + "T00:00:00Z");
    d.setUTCDate(d.getUTCDate() + n);
    return d.toISOString().slice(0, 10);
  }
  /** The wall-clock fields of instant `ms` in zone `tz`, as a UTC timestamp. */
  function wallClock(ms, tz) {
    var f = new Intl.DateTimeFormat("en-US", { timeZone: tz, hourCycle: "h23", year: "numeric", month: "2-digit",
      day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
    var p = {};
    f.formatToParts(new Date(ms)).forEach(function (x) { p[x.type] = x.value; });
    return Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour, +p.minute, +p.second);
  }
  /** An RFC 3339 instant as a `datetime-local` value in the advertiser's zone. */
  function toLocalInput(rfc3339, tz) {
    var ms = Date.parse(rfc3339);
    return isNaN(ms) ? "" : new Date(wallClock(ms, tz)).toISOString().slice(0, 16);
  }
  /** A `datetime-local` value read in the advertiser's zone, as an RFC 3339 instant. */
  function fromLocalInput(value, tz) {
    var wall = Date.parse(value + ":00Z");
    // The zone's offset at that moment; a second pass settles days when it changes.
    var ms = wall - (wallClock(wall, tz) - wall);
    ms = wall - (wallClock(ms, tz) - ms);
    return new Date(ms).toISOString().replace(".000Z", "Z");
  }

  /** The local dates a range covers; lifetime starts at the first day with data. */
  function datesOf(rg, tz, firstDataDate) {
    var t = today(tz), from, to = t;
    if (rg.range === "custom") { from = rg.from; to = rg.to; }
    else if (rg.range === "today") from = t;
    else if (rg.range === "yesterday") { from = to = addDays(t, -1); }
    else if (rg.range === "last_7_days") from = addDays(t, -6);
    else if (rg.range === "last_30_days") from = addDays(t, -29);
    else from = firstDataDate || t;
    var out = [];
    for (var d = from; d <= to && out.length < 3660; d = addDays(d, 1)) out.push(d);
    return out;
  }

  function rangePicker(rg, path, tz) {
    var select = h("select", { id: "range", "aria-label": "Date range" }, RANGES.map(function (r) {
      return h("option", { value: r[0], selected: r[0] === rg.range }, r[1]);
    }));
    var t = today(tz);
    var from = h("input", { type: "date", id: "from", "aria-label": "From", value: rg.from || addDays(t, -6), max: t });
    var to = h("input", { type: "date", id: "to", "aria-label": "To", value: rg.to || t, max: t });
    var custom = h("span", { class: "custom", hidden: rg.range !== "custom" }, from, " – ", to,
      h("button", { type: "submit", class: "small" }, "Apply"));
    function go() {
      var q = select.value === "custom" ? "from=" + from.value + "&to=" + to.value : "range=" + select.value;
      location.hash = "#" + path + "?" + q;
    }
    select.addEventListener("change", function () {
      if (select.value === "custom") custom.hidden = false;
      else go();
    });
    return h("form", { class: "range", onsubmit: function (ev) { ev.preventDefault(); go(); } }, select, custom,
      h("span", { class: "tz" }, "Time zone: " + (tz || "UTC")));
  }

  function tzOfAdvertiser(id) {
    if (!isAdmin()) return me.timezone;
    var a = advertisersById && advertisersById[id];
    return a ? a.timezone : "UTC";
  }

  // ---- tables ------------------------------------------------------------------------

  function table(id, columns, rows, foot) {
    return h("div", { class: "scroll" }, h("table", { id: id },
      h("thead", null, h("tr", null, columns.map(function (c) { return h("th", { scope: "col", class: c.num ? "num" : null }, c.title); }))),
      h("tbody", null, rows.map(function (r) {
        return h("tr", null, columns.map(function (c) { return h("td", { class: c.num ? "num" : null, "data-col": c.key }, c.cell(r)); }));
      })),
      foot ? h("tfoot", null, h("tr", null, columns.map(function (c, i) {
        return h("td", { class: c.num ? "num" : null, "data-col": c.key }, i === 0 ? "Total" : c.total ? c.cell(foot) : "");
      }))) : null));
  }
  function metricColumns() {
    return [
      { key: "impressions", title: "Impressions", num: true, total: true, cell: function (r) { return num(r.impressions); } },
      { key: "viewability_rate", title: "Viewable", num: true, total: true, cell: function (r) { return pct(r.viewability_rate); } },
      { key: "clicks", title: "Clicks", num: true, total: true, cell: function (r) { return num(r.clicks); } },
      { key: "ctr", title: "CTR", num: true, total: true, cell: function (r) { return pct(r.ctr); } },
      { key: "spend_micros", title: "Spend", num: true, total: true, cell: function (r) { return money(r.spend_micros); } },
      { key: "conversions", title: "Conversions", num: true, total: true, cell: function (r) { return num(r.conversions); } },
    ];
  }
  var ZERO = { impressions: 0, viewable_impressions: 0, clicks: 0, conversions: 0, spend_micros: 0, ctr: null,
    viewability_rate: null };

  // ---- overview ----------------------------------------------------------------------

  function overview(query, gen) {
    var rg = rangeOf(query);
    var tz = isAdmin() ? "UTC" : me.timezone;
    var report = "/v1/reports?" + rangeParams(rg) + "&group_by=campaign";
    return Promise.all([get("/v1/campaigns"), get(report)]).then(function (res) {
      if (gen !== generation) return;
      var campaigns = res[0].items, rep = res[1];
      var byId = {};
      rep.rows.forEach(function (r) { byId[r.campaign_id] = r; });
      var rows = campaigns.map(function (c) {
        var m = byId[c.id] || ZERO;
        return Object.assign({}, m, { campaign: c });
      });
      var cols = [{ key: "name", title: "Campaign", cell: function (r) {
        return r.campaign ? h("a", { href: "#/campaigns/" + r.campaign.id + "?" + rangeParams(rg) }, r.campaign.name) : "";
      } }, { key: "status", title: "Status", cell: function (r) { return r.campaign ? badge(r.campaign.status) : ""; } }]
        .concat(metricColumns())
        .concat([{ key: "budget_left", title: "Budget left", num: true, cell: function (r) {
          return r.campaign ? money(Math.max(0, r.campaign.total_budget_micros - r.campaign.spend_micros)) : "";
        } }]);
      if (isAdmin()) {
        cols.splice(1, 0, { key: "advertiser", title: "Advertiser", cell: function (r) {
          var a = r.campaign && advertisersById[r.campaign.advertiser_id];
          return a ? a.name : "";
        } });
      }
      show(
        h("div", { class: "head" }, h("h1", null, "Campaigns"),
          isAdmin() ? null : h("a", { class: "button", href: "#/campaigns/new" }, "New campaign")),
        isAdmin() ? h("p", { class: "hint" }, "All advertisers; dates in UTC.") : null,
        rangePicker(rg, "/", tz),
        campaigns.length === 0
          ? h("section", { class: "card empty" }, h("h2", null, "No campaigns yet"),
            h("p", null, isAdmin() ? "Advertisers' campaigns will show here." :
              "Create a campaign, add an ad, and submit it for review. It starts serving once an ad is approved."),
            isAdmin() ? null : h("a", { class: "button", href: "#/campaigns/new" }, "Create your first campaign"))
          : h("section", { class: "card" }, table("campaigns", cols, rows, rep.totals),
            h("div", { class: "actions" }, csvButton(report + "&format=csv", "adtally-campaigns.csv")))
      );
    });
  }

  // ---- campaign page -----------------------------------------------------------------

  var ACTIONS = {
    draft: ["submit", "archive"], pending_review: [], active: ["pause", "archive"], paused: ["resume", "archive"],
    archived: ["restore"], completed: ["archive"],
  };

  function campaignPage(id, query, gen) {
    var rg = rangeOf(query);
    return get("/v1/campaigns/" + id).then(function (c) {
      if (gen !== generation) return;
      var tz = tzOfAdvertiser(c.advertiser_id);
      var base = "/v1/reports?" + rangeParams(rg) + "&campaign_id=" + c.id + (isAdmin() ? "&advertiser_id=" + c.advertiser_id : "");
      var ivt = "/v1/reports/ivt?" + rangeParams(rg) + "&campaign_id=" + c.id + (isAdmin() ? "&advertiser_id=" + c.advertiser_id : "");
      var daily = base + "&granularity=day";
      var byAd = base + "&group_by=ad";
      var dims = ["device", "placement", "country"];
      // Alerts are advice: a failure to compute them never hides the campaign's numbers.
      var alerts = get("/v1/campaigns/" + c.id + "/insights").then(null, function () { return { items: [] }; });
      return Promise.all([get("/v1/ads?campaign_id=" + c.id), get(daily), get(byAd), get(ivt)]
        .concat(dims.map(function (d) { return get(base + "&group_by=" + d); })).concat([alerts])).then(function (res) {
        if (gen !== generation) return;
        var ads = res[0].items, day = res[1], adRep = res[2], ivtRep = res[3], insights = res[4 + dims.length].items || [];
        var t = day.totals;
        var tiles = [["Impressions", num(t.impressions), "impressions"], ["Viewable", pct(t.viewability_rate), "viewability_rate"],
          ["Clicks", num(t.clicks), "clicks"], ["CTR", pct(t.ctr), "ctr"], ["Spend", money(t.spend_micros), "spend_micros"],
          ["Conversions", num(t.conversions), "conversions"], ["Reach", num(t.reach), "reach"],
          ["Frequency", t.frequency === null || t.frequency === undefined ? "—" : t.frequency.toFixed(2), "frequency"]];
        var adMetrics = {};
        adRep.rows.forEach(function (r) { adMetrics[r.ad_id] = r; });
        var adCols = [{ key: "headline", title: "Ad", cell: function (r) { return r.ad ? r.ad.headline : ""; } },
          { key: "format", title: "Format", cell: function (r) { return r.ad ? r.ad.format : ""; } },
          { key: "status", title: "Review", cell: function (r) {
            if (!r.ad) return "";
            var rev = r.ad.revision;
            return [badge(r.ad.status), r.ad.rejection_reason ? h("span", { class: "reason" }, " " + r.ad.rejection_reason) : null,
              rev ? h("div", { class: "hint" }, "Edit (version " + rev.version + "): ", badge(rev.status),
                rev.rejection_reason ? h("span", { class: "reason" }, " " + rev.rejection_reason) : null) : null];
          } }].concat(metricColumns()).concat([{ key: "edit", title: "", cell: function (r) {
          return r.ad && !isAdmin() ? h("a", { href: "#/ads/" + r.ad.id + "/edit" }, "Edit") : "";
        } }]);
        var adRows = ads.map(function (a) { return Object.assign({}, adMetrics[a.id] || ZERO, { ad: a }); });
        var actions = (ACTIONS[c.status] || []).concat(["clone"]).map(function (action) {
          return h("button", { type: "button", class: "secondary small", id: "action-" + action, onclick: function () {
            post("/v1/campaigns/" + c.id + "/" + action).then(function (r) {
              toast("Campaign " + (action === "clone" ? "cloned" : label(r.status)) + ".");
              if (action === "clone") location.hash = "#/campaigns/" + r.id + "/edit";
              else route();
            }, function (e) { toast(e.message, true); });
          } }, action[0].toUpperCase() + action.slice(1));
        });
        var ivtRows = Object.keys(ivtRep.totals.by_reason).map(function (reason) {
          var k = ivtRep.totals.by_reason[reason];
          return { reason: reason, impression: k.impression, viewable: k.viewable, click: k.click };
        }).filter(function (r) { return r.impression + r.viewable + r.click > 0; });
        show(
          h("p", { class: "crumbs" }, h("a", { href: "#/?" + rangeParams(rg) }, "Campaigns"), " › "),
          h("div", { class: "head" }, h("h1", { id: "campaign-name" }, c.name), badge(c.status),
            h("span", { class: "grow" }),
            isAdmin() ? null : h("a", { class: "button secondary small", href: "#/campaigns/" + c.id + "/edit" }, "Edit"),
            isAdmin() ? null : actions),
          h("p", { class: "hint" }, "Bid " + money(c.cpm_bid_micros) + " CPM · budget " + money(c.total_budget_micros) +
            " (" + money(Math.max(0, c.total_budget_micros - c.spend_micros)) + " left)" +
            (c.daily_budget_micros ? " · daily " + money(c.daily_budget_micros) : "") + " · pacing " + c.pacing),
          rangePicker(rg, "/campaigns/" + c.id, tz),
          h("section", { class: "tiles", id: "kpis" }, tiles.map(function (x) {
            return h("div", { class: "tile", "data-metric": x[2] }, h("span", { class: "tl" }, x[0]), h("strong", null, x[1]));
          })),
          insights.length ? h("section", { class: "card", id: "alerts" }, h("h2", null, "Alerts"),
            insights.map(function (a) {
              return h("div", { class: "alert", "data-kind": a.kind }, badge(a.severity), " ", h("strong", null, label(a.kind)),
                h("span", { class: "hint" }, " " + a.period.from + " – " + a.period.to + " against " + a.baseline.from + " – " +
                  a.baseline.to), h("p", null, a.action));
            })) : null,
          h("section", { class: "card" }, h("div", { class: "head" }, h("h2", null, "Daily"), h("span", { class: "grow" }),
            csvButton(daily + "&format=csv", "adtally-campaign-" + c.id + "-daily.csv")),
            chart(day.rows, datesOf(rg, tz, day.rows.length ? day.rows[0].date : null))),
          h("section", { class: "card" }, h("div", { class: "head" }, h("h2", null, "Ads"), h("span", { class: "grow" }),
            isAdmin() ? null : h("a", { class: "button small", href: "#/campaigns/" + c.id + "/ads/new" }, "New ad"),
            csvButton(byAd + "&format=csv", "adtally-campaign-" + c.id + "-ads.csv")),
            ads.length ? table("ads", adCols, adRows, null)
              : h("p", { class: "empty" }, "No ads yet. Add one: the campaign can only serve an approved ad.")),
          h("div", { class: "grid" }, dims.map(function (d, i) {
            var rep = res[4 + i];
            var cols = [{ key: d, title: d[0].toUpperCase() + d.slice(1), cell: function (r) { return r[d]; } }].concat(metricColumns().slice(0, 4));
            return h("section", { class: "card" }, h("div", { class: "head" }, h("h2", null, "By " + d), h("span", { class: "grow" }),
              csvButton(base + "&group_by=" + d + "&format=csv", "adtally-campaign-" + c.id + "-" + d + ".csv")),
              rep.rows.length ? table("by-" + d, cols, rep.rows, null) : h("p", { class: "empty" }, "No traffic in this range."));
          })),
          h("section", { class: "card", id: "ivt" }, h("div", { class: "head" }, h("h2", null, "Invalid traffic"), h("span", { class: "grow" }),
            csvButton(ivt + "&format=csv", "adtally-campaign-" + c.id + "-ivt.csv")),
            h("p", { class: "hint" }, "Filtered out and never billed: " + num(ivtRep.totals.invalid_impressions) + " impressions, " +
              num(ivtRep.totals.invalid_clicks) + " clicks."),
            ivtRows.length ? table("ivt-table", [
              { key: "reason", title: "Reason", cell: function (r) { return label(r.reason); } },
              { key: "impression", title: "Impressions", num: true, cell: function (r) { return num(r.impression); } },
              { key: "viewable", title: "Viewables", num: true, cell: function (r) { return num(r.viewable); } },
              { key: "click", title: "Clicks", num: true, cell: function (r) { return num(r.click); } }], ivtRows, null) : null)
        );
      });
    });
  }

  /** Daily impressions and clicks (bars, left axis) and CTR (line, right axis) as SVG. */
  function chart(rows, dates) {
    var NS = "http://www.w3.org/2000/svg";
    function s(tag, attrs, text) {
      var e = document.createElementNS(NS, tag);
      Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
      if (text !== undefined) e.textContent = text;
      return e;
    }
    var byDate = {};
    rows.forEach(function (r) { byDate[r.date] = r; });
    // Days without traffic are zero, not skipped.
    var data = dates.map(function (d) { return Object.assign({ date: d }, byDate[d] || ZERO); });
    if (!data.length) return h("p", { class: "empty" }, "No days in this range.");
    var W = 720, H = 240, L = 56, R = 48, T = 12, B = 28;
    // Axis tops rounded up to 1, 2 or 5 × 10ⁿ, so the gridlines read as round numbers.
    function nice(v) {
      var p = Math.pow(10, Math.floor(Math.log10(v)));
      var m = v / p;
      return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
    }
    var maxI = Math.max(2, nice(Math.max.apply(null, data.map(function (d) { return d.impressions; }))));
    var maxC = nice(Math.max(0.5, Math.max.apply(null, data.map(function (d) { return d.ctr || 0; }))));
    var bw = (W - L - R) / data.length;
    var y = function (v) { return T + (H - T - B) * (1 - v / maxI); };
    var yc = function (v) { return T + (H - T - B) * (1 - v / maxC); };
    var svg = s("svg", { viewBox: "0 0 " + W + " " + H, class: "chart", id: "daily-chart", role: "img",
      "aria-label": "Daily impressions, clicks and CTR" });
    [0, 0.5, 1].forEach(function (f) {
      svg.appendChild(s("line", { x1: L, x2: W - R, y1: y(maxI * f), y2: y(maxI * f), class: "grid" }));
      svg.appendChild(s("text", { x: L - 6, y: y(maxI * f) + 4, "text-anchor": "end", class: "axis" }, intFmt.format(Math.round(maxI * f))));
      svg.appendChild(s("text", { x: W - R + 6, y: yc(maxC * f) + 4, class: "axis ctr" }, (maxC * f).toFixed(1) + "%"));
    });
    var path = "", pen = false;
    data.forEach(function (d, i) {
      var x = L + i * bw;
      var g = s("g", { "data-date": d.date });
      g.appendChild(s("title", {}, d.date + ": " + intFmt.format(d.impressions) + " impressions, " + intFmt.format(d.clicks) +
        " clicks, CTR " + pct(d.ctr)));
      g.appendChild(s("rect", { x: x + bw * 0.1, width: Math.max(1, bw * 0.8), y: y(d.impressions), height: y(0) - y(d.impressions), class: "imp" }));
      g.appendChild(s("rect", { x: x + bw * 0.3, width: Math.max(1, bw * 0.4), y: y(d.clicks), height: y(0) - y(d.clicks), class: "clk" }));
      svg.appendChild(g);
      // CTR is undefined on a day without impressions: the line breaks there.
      if (d.ctr !== null && d.ctr !== undefined) {
        path += (pen ? "L" : "M") + (x + bw / 2).toFixed(1) + " " + yc(d.ctr).toFixed(1);
      }
      pen = d.ctr !== null && d.ctr !== undefined;
      var every = Math.ceil(data.length / 8);
      if (i % every === 0) svg.appendChild(s("text", { x: x + bw / 2, y: H - 8, "text-anchor": "middle", class: "axis" }, d.date.slice(5)));
    });
    if (path) svg.appendChild(s("path", { d: path, class: "ctrline" }));
    data.forEach(function (d, i) {
      if (d.ctr !== null && d.ctr !== undefined) {
        svg.appendChild(s("circle", { cx: L + i * bw + bw / 2, cy: yc(d.ctr), r: 3, class: "ctrdot" }));
      }
    });
    return h("figure", null, svg, h("figcaption", null, h("span", { class: "key imp" }), "Impressions ",
      h("span", { class: "key clk" }), "Clicks ", h("span", { class: "key ctr" }), "CTR (right axis)"));
  }

  // ---- forms -------------------------------------------------------------------------

  function field(labelText, input, hint) {
    return h("div", { class: "field" }, h("label", { for: input.id }, labelText), input, hint ? h("small", null, hint) : null);
  }
  function formError() { return h("p", { class: "error", role: "alert" }); }

  function campaignForm(id, gen) {
    return Promise.all([id ? get("/v1/campaigns/" + id) : Promise.resolve(null), get("/v1/placements")]).then(function (res) {
      if (gen !== generation) return;
      var c = res[0], placements = res[1].items;
      var name = h("input", { id: "c-name", required: true, maxlength: 200, value: c ? c.name : "" });
      var bid = h("input", { id: "c-bid", required: true, inputmode: "decimal", value: c ? microsInput(c.cpm_bid_micros) : "2.00" });
      var total = h("input", { id: "c-total", required: true, inputmode: "decimal", value: c ? microsInput(c.total_budget_micros) : "" });
      var daily = h("input", { id: "c-daily", inputmode: "decimal", value: c ? microsInput(c.daily_budget_micros) : "" });
      var pacing = h("select", { id: "c-pacing" }, [["even", "Even through the day"], ["asap", "As fast as possible"]].map(function (p) {
        return h("option", { value: p[0], selected: c ? c.pacing === p[0] : p[0] === "even" }, p[1]);
      }));
      var tz = c ? tzOfAdvertiser(c.advertiser_id) : me.timezone || "UTC";
      var start = h("input", { id: "c-start", type: "datetime-local", value: c && c.start_at ? toLocalInput(c.start_at, tz) : "" });
      var end = h("input", { id: "c-end", type: "datetime-local", value: c && c.end_at ? toLocalInput(c.end_at, tz) : "" });
      var capN = h("input", { id: "c-cap-n", type: "number", min: 1, max: 1000, value: c && c.frequency_cap ? c.frequency_cap.impressions : "" });
      var capH = h("input", { id: "c-cap-h", type: "number", min: 1, max: 168, value: c && c.frequency_cap ? c.frequency_cap.per_hours : "" });
      var devices = ["desktop", "mobile", "tablet"].map(function (d) {
        return h("label", { class: "check" }, h("input", { type: "checkbox", name: "device", value: d,
          checked: c ? c.targeting.devices.indexOf(d) >= 0 : false }), " " + d);
      });
      var slots = placements.map(function (p) {
        return h("label", { class: "check" }, h("input", { type: "checkbox", name: "placement", value: p.id,
          checked: c ? c.targeting.placements.indexOf(p.id) >= 0 : false }), " " + p.name + " (" + p.format + ")");
      });
      var error = formError();
      function checked(list) {
        return list.map(function (l) { return l.querySelector("input"); }).filter(function (i) { return i.checked; })
          .map(function (i) { return i.value; });
      }
      show(h("h1", null, c ? "Edit campaign" : "New campaign"),
        h("form", { class: "card form", id: "campaign-form", onsubmit: function (ev) {
          ev.preventDefault();
          var body = { name: name.value.trim(), cpm_bid_micros: toMicros(bid.value), total_budget_micros: toMicros(total.value),
            daily_budget_micros: daily.value.trim() ? toMicros(daily.value) : null, pacing: pacing.value,
            targeting: { devices: checked(devices), placements: checked(slots) },
            start_at: start.value ? fromLocalInput(start.value, tz) : null, end_at: end.value ? fromLocalInput(end.value, tz) : null,
            frequency_cap: capN.value && capH.value ? { impressions: Number(capN.value), per_hours: Number(capH.value) } : null };
          if (body.cpm_bid_micros === null || body.total_budget_micros === null ||
            (daily.value.trim() && body.daily_budget_micros === null)) {
            error.textContent = "Amounts are numbers with up to six decimals, like 12.50.";
            return;
          }
          if (!capN.value !== !capH.value) {
            error.textContent = "A frequency cap needs both a number of impressions and a number of hours.";
            return;
          }
          (c ? api("PATCH", "/v1/campaigns/" + c.id, body) : post("/v1/campaigns", body)).then(function (saved) {
            toast(c ? "Campaign saved." : "Campaign created. Now add an ad.");
            location.hash = c ? "#/campaigns/" + saved.id : "#/campaigns/" + saved.id + "/ads/new";
          }, function (e) { error.textContent = e.message; });
        } },
          field("Name", name),
          h("div", { class: "row" }, field("CPM bid", bid, "Price per thousand impressions"),
            field("Total budget", total), field("Daily budget", daily, "Optional; needed for even pacing")),
          field("Pacing", pacing),
          h("div", { class: "row" }, field("Starts", start, "Optional, " + tz + " time"), field("Ends", end, "Optional, " + tz + " time")),
          h("div", { class: "row" }, field("Frequency cap: impressions", capN, "Optional, per visitor"), field("… per hours", capH, "1 to 168")),
          h("fieldset", null, h("legend", null, "Devices (none = all)"), devices),
          h("fieldset", null, h("legend", null, "Placements (none = all)"), slots.length ? slots : h("p", { class: "hint" }, "No placements yet.")),
          error,
          h("div", { class: "actions" }, h("button", { type: "submit", id: "c-save" }, c ? "Save" : "Create campaign"),
            h("a", { href: c ? "#/campaigns/" + c.id : "#/" }, "Cancel"))));
    });
  }

  /** The ad as the tag will render it. */
  function preview(ad) {
    var format = ad.format === "sidebar" || ad.format === "video" ? ad.format : "compact";
    var media = null;
    if (/^https:\/\//i.test(ad.image_url || "")) media = h("img", { class: "adtally-media", src: ad.image_url, alt: ad.headline || "" });
    return h("div", { class: "adtally-ad adtally-" + format },
      media,
      h("span", { class: "adtally-text" }, h("span", { class: "adtally-h" }, ad.headline || "Your headline"),
        ad.body ? h("span", { class: "adtally-b" }, ad.body) : null,
        h("span", { class: "adtally-cta" }, ad.cta || "Learn more")),
      h("span", { class: "adtally-label" }, "Ad"));
  }

  function adForm(campaignId, adId, gen) {
    return (adId ? get("/v1/ads/" + adId) : Promise.resolve(null)).then(function (served) {
      if (gen !== generation) return;
      // The form edits the latest content: an edit under review (or rejected) if there is one.
      var ad = served && served.revision ? Object.assign({}, served.revision, { id: served.id, campaign_id: served.campaign_id }) : served;
      var cid = ad ? ad.campaign_id : campaignId;
      var format = h("select", { id: "a-format" }, ["compact", "sidebar"].map(function (f) {
        return h("option", { value: f, selected: ad ? ad.format === f : f === "sidebar" }, f);
      }));
      var headline = h("input", { id: "a-headline", required: true, maxlength: 90, value: ad ? ad.headline : "" });
      var body = h("textarea", { id: "a-body", maxlength: 300, rows: 3 });
      body.value = ad ? ad.body : "";
      var image = h("input", { id: "a-image", type: "url", value: ad && ad.image_url ? ad.image_url : "", placeholder: "https://…" });
      var cta = h("input", { id: "a-cta", maxlength: 30, value: ad ? ad.cta : "Learn more" });
      var target = h("input", { id: "a-target", type: "url", required: true, value: ad ? ad.target_url : "", placeholder: "https://…" });
      var box = h("div", { class: "preview", id: "a-preview", "aria-live": "polite" });
      var error = formError();
      function current() {
        return { format: format.value, headline: headline.value.trim(), body: body.value.trim(),
          image_url: image.value.trim() || null, cta: cta.value.trim() || "Learn more", target_url: target.value.trim() };
      }
      function refresh() { box.textContent = ""; box.appendChild(preview(current())); }
      [format, headline, body, image, cta].forEach(function (i) { i.addEventListener("input", refresh); });
      refresh();
      show(h("p", { class: "crumbs" }, h("a", { href: "#/campaigns/" + cid }, "Campaign"), " › "),
        h("h1", null, ad ? "Edit ad" : "New ad"),
        ad ? h("p", { class: "hint" }, served.status === "approved"
          ? "The approved version keeps serving; your changes go to review as a new version."
          : "Saving changes sends the ad back to review.") : null,
        h("div", { class: "split" },
          h("form", { class: "card form", id: "ad-form", onsubmit: function (ev) {
            ev.preventDefault();
            var data = current();
            (ad ? api("PATCH", "/v1/ads/" + ad.id, data) : post("/v1/campaigns/" + cid + "/ads", data)).then(function () {
              toast(ad ? "Ad saved and sent to review." : "Ad created. Submit the campaign for review when ready.");
              location.hash = "#/campaigns/" + cid;
            }, function (e) { error.textContent = e.message; });
          } },
            field("Format", format), field("Headline", headline), field("Text", body), field("Image URL", image, "Optional, https"),
            field("Button", cta), field("Target URL", target, "Where a click lands"), error,
            h("div", { class: "actions" }, h("button", { type: "submit", id: "a-save" }, ad ? "Save" : "Create ad"),
              h("a", { href: "#/campaigns/" + cid }, "Cancel"))),
          h("section", { class: "card" }, h("h2", null, "Preview"), box)));
    });
  }

  // ---- advertiser: billing -----------------------------------------------------------

  function ledgerPage(gen) {
    return get("/v1/ledger").then(function (l) {
      if (gen !== generation) return;
      var code = h("input", { id: "promo-code", required: true, maxlength: 64 });
      var error = formError();
      show(h("h1", null, "Billing"),
        h("section", { class: "tiles" }, h("div", { class: "tile" }, h("span", { class: "tl" }, "Balance"), h("strong", { id: "balance" }, money(l.balance_micros)))),
        h("section", { class: "card" }, h("h2", null, "Ledger"),
          l.items.length ? table("ledger", [
            { key: "at", title: "Date", cell: function (r) { return String(r.at).slice(0, 10); } },
            { key: "kind", title: "Kind", cell: function (r) { return label(r.kind); } },
            { key: "note", title: "Note", cell: function (r) { return r.note || ""; } },
            { key: "amount", title: "Amount", num: true, cell: function (r) { return money(r.amount_micros); } }], l.items, null)
            : h("p", { class: "empty" }, "No entries yet. The operator tops up your balance, or redeem a promo code below.")),
        h("form", { class: "card form", id: "redeem", onsubmit: function (ev) {
          ev.preventDefault();
          post("/v1/promo-codes/redeem", { code: code.value.trim() }).then(function () { toast("Code redeemed."); route(); },
            function (e) { error.textContent = e.message; });
        } }, h("h2", null, "Redeem a promo code"), field("Code", code), error, h("button", { type: "submit" }, "Redeem")));
    });
  }

  // ---- operator ----------------------------------------------------------------------

  function moderationPage(gen) {
    return Promise.all([get("/v1/ads?status=pending_review"), get("/v1/ads?status=approved")]).then(function (res) {
      if (gen !== generation) return;
      var pending = res[0].items;
      var approvedByCampaign = {};
      res[1].items.forEach(function (a) { (approvedByCampaign[a.campaign_id] = approvedByCampaign[a.campaign_id] || []).push(a); });
      show(h("h1", null, "Moderation"),
        pending.length === 0 ? h("section", { class: "card empty", id: "queue-empty" }, h("h2", null, "Nothing to review"),
          h("p", null, "New and edited ads appear here. Approving an ad starts its campaign if it was waiting for review.")) : null,
        pending.map(function (ad) {
          var reason = h("input", { id: "reason-" + ad.id, maxlength: 500, placeholder: "Reason shown to the advertiser", "aria-label": "Rejection reason" });
          var error = formError();
          var adv = advertisersById[ad.advertiser_id];
          // An edit of an approved ad is a revision: review it beside the version that
          // keeps serving meanwhile. A new ad is compared with the campaign's live ads.
          var edit = ad.revision && ad.revision.status === "pending_review" ? ad.revision : null;
          var pendingAd = edit || ad;
          var live = edit ? [ad] : (approvedByCampaign[ad.campaign_id] || []).filter(function (a) { return a.id !== ad.id; });
          return h("section", { class: "card review", "data-ad": ad.id },
            h("h2", null, pendingAd.headline),
            h("p", { class: "hint" }, (adv ? adv.name : "Advertiser " + ad.advertiser_id) + " · campaign " + ad.campaign_id + " · " + pendingAd.format +
              " · lands on ", h("a", { href: pendingAd.target_url, rel: "noopener noreferrer", target: "_blank" }, pendingAd.target_url)),
            h("div", { class: "split" },
              h("div", { class: "pending" }, h("h3", null, edit ? "Pending: version " + edit.version : "Pending: new ad"), preview(pendingAd)),
              h("div", { class: "serving" }, h("h3", null, edit ? "Serving now: version " + ad.version : "Approved in this campaign"),
                live.length ? live.map(preview) : h("p", { class: "hint" }, "None yet."))),
            h("div", { class: "actions" },
              h("button", { type: "button", id: "approve-" + ad.id, onclick: function () {
                post("/v1/ads/" + ad.id + "/review", { decision: "approve" }).then(function () { toast("Approved."); route(); },
                  function (e) { error.textContent = e.message; });
              } }, "Approve"),
              reason,
              h("button", { type: "button", class: "danger", id: "reject-" + ad.id, onclick: function () {
                if (!reason.value.trim()) { error.textContent = "Say why, so the advertiser can fix it."; reason.focus(); return; }
                post("/v1/ads/" + ad.id + "/review", { decision: "reject", reason: reason.value.trim() }).then(function () {
                  toast("Rejected."); route();
                }, function (e) { error.textContent = e.message; });
              } }, "Reject")),
            error);
        }));
    });
  }

  function advertisersPage(gen) {
    return get("/v1/advertisers").then(function (list) {
      if (gen !== generation) return;
      advertisersById = {};
      list.items.forEach(function (a) { advertisersById[a.id] = a; });
      var name = h("input", { id: "adv-name", required: true }), email = h("input", { id: "adv-email", type: "email", required: true });
      var tz = h("input", { id: "adv-tz", value: "UTC", required: true });
      var error = formError();
      var pcode = h("input", { id: "promo-new-code", required: true }), pamount = h("input", { id: "promo-amount", required: true, inputmode: "decimal" });
      var pmax = h("input", { id: "promo-max", type: "number", min: 1, value: 100 });
      var perror = formError();
      var keyOut = h("output", { id: "new-key", class: "secret" });
      var cols = [
        { key: "name", title: "Advertiser", cell: function (a) { return [a.name, h("br"), h("small", null, a.email)]; } },
        { key: "tz", title: "Time zone", cell: function (a) { return a.timezone; } },
        { key: "balance", title: "Balance", num: true, cell: function (a) { return money(a.balance_micros); } },
        { key: "credit", title: "Add credit", cell: function (a) {
          var amount = h("input", { "aria-label": "Amount for " + a.name, inputmode: "decimal", class: "short", required: true, id: "credit-" + a.id });
          var kind = h("select", { "aria-label": "Kind" }, ["topup", "bonus", "promo"].map(function (k) { return h("option", { value: k }, k); }));
          return h("form", { class: "inline", onsubmit: function (ev) {
            ev.preventDefault();
            var micros = toMicros(amount.value);
            if (!micros) { toast("Enter an amount like 100.00", true); return; }
            post("/v1/advertisers/" + a.id + "/credits", { amount_micros: micros, kind: kind.value }).then(function () {
              toast("Credited."); route();
            }, function (e) { toast(e.message, true); });
          } }, amount, kind, h("button", { type: "submit", class: "small" }, "Add"));
        } },
        { key: "key", title: "", cell: function (a) {
          return h("button", { type: "button", class: "secondary small", onclick: function () {
            post("/v1/advertisers/" + a.id + "/keys").then(function (k) {
              keyOut.textContent = "New key for " + a.name + " (shown once): " + k.api_key;
            }, function (e) { toast(e.message, true); });
          } }, "New API key");
        } }];
      show(h("h1", null, "Advertisers"), keyOut,
        h("section", { class: "card" }, list.items.length ? table("advertisers", cols, list.items, null)
          : h("p", { class: "empty" }, "No advertisers yet. Create one below, then give it a key and credit.")),
        h("div", { class: "split" },
          h("form", { class: "card form", id: "advertiser-form", onsubmit: function (ev) {
            ev.preventDefault();
            post("/v1/advertisers", { name: name.value.trim(), email: email.value.trim(), timezone: tz.value.trim() })
              .then(function () { toast("Advertiser created."); route(); }, function (e) { error.textContent = e.message; });
          } }, h("h2", null, "New advertiser"), field("Name", name), field("Email", email), field("Time zone", tz, "IANA name, e.g. Europe/Berlin"),
            error, h("button", { type: "submit" }, "Create advertiser")),
          h("form", { class: "card form", id: "promo-form", onsubmit: function (ev) {
            ev.preventDefault();
            var micros = toMicros(pamount.value);
            if (!micros) { perror.textContent = "Enter an amount like 10.00"; return; }
            post("/v1/promo-codes", { code: pcode.value.trim(), amount_micros: micros, max_redemptions: Number(pmax.value) || 1 })
              .then(function () { toast("Promo code created."); pcode.value = ""; }, function (e) { perror.textContent = e.message; });
          } }, h("h2", null, "New promo code"), field("Code", pcode), field("Amount", pamount), field("Max redemptions", pmax),
            perror, h("button", { type: "submit" }, "Create code"))));
    });
  }

  function placementsPage(gen) {
    return get("/v1/placements").then(function (list) {
      if (gen !== generation) return;
      var origin = location.origin;
      var id = h("input", { id: "p-id", required: true, pattern: "[a-z0-9][a-z0-9-]*", placeholder: "sidebar-main" });
      var name = h("input", { id: "p-name", required: true });
      var format = h("select", { id: "p-format" }, ["compact", "sidebar"].map(function (f) { return h("option", { value: f }, f); }));
      var floor = h("input", { id: "p-floor", inputmode: "decimal", value: "0.50" });
      var error = formError();
      function snippet(p) {
        return '<script async src="' + origin + '/tag.js"></script>\n<div data-adtally-placement="' + p.id + '"></div>';
      }
      show(h("h1", null, "Placements"),
        list.items.length === 0 ? h("section", { class: "card empty" }, h("p", null, "No placements yet. Create one for each ad slot on your site.")) : null,
        list.items.map(function (p) {
          var code = h("pre", { class: "snippet" }, snippet(p));
          return h("section", { class: "card", "data-placement": p.id }, h("div", { class: "head" }, h("h2", null, p.name),
            h("span", { class: "hint" }, p.id + " · " + p.format + " · floor " + money(p.floor_cpm_micros) + " CPM"), h("span", { class: "grow" }),
            h("button", { type: "button", class: "secondary small", onclick: function () {
              navigator.clipboard.writeText(code.textContent).then(function () { toast("Copied."); }, function () { toast("Select the text and copy it.", true); });
            } }, "Copy embed code")), code);
        }),
        h("form", { class: "card form", id: "placement-form", onsubmit: function (ev) {
          ev.preventDefault();
          var f = toMicros(floor.value);
          if (f === null) { error.textContent = "Floor is an amount like 0.50"; return; }
          post("/v1/placements", { id: id.value.trim(), name: name.value.trim(), format: format.value, floor_cpm_micros: f })
            .then(function () { toast("Placement created."); route(); }, function (e) { error.textContent = e.message; });
        } }, h("h2", null, "New placement"), h("div", { class: "row" }, field("Id (slug)", id), field("Name", name)),
          h("div", { class: "row" }, field("Format", format), field("Floor CPM", floor)), error, h("button", { type: "submit" }, "Create placement")));
    });
  }

  window.addEventListener("hashchange", route);
  route();
})();
