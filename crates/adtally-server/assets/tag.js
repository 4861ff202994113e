/*! adtally ad tag. Embed once per page:
 *   <script async src="https://ADSERVER/tag.js"></script>
 * and one slot per ad:  <div data-adtally-placement="SLUG" data-adtally-uid="optional"></div>
 * Slots added later are filled by calling adtally.scan().
 * Theme with CSS variables on the slot or any ancestor: --adtally-bg, --adtally-fg,
 * --adtally-muted, --adtally-accent, --adtally-border, --adtally-radius, --adtally-font.
 */
(function () {
  "use strict";
  // One namespace, nothing else global; every entry point is wrapped so that no
  // exception of ours ever reaches the host page.
  var ns = (window.adtally = window.adtally || {});
  if (ns.scan) return; // the tag was included twice

  var script = document.currentScript;
  if (!script || !/\/tag\.js(\?|$)/.test(script.src)) {
    script = document.querySelector('script[src*="/tag.js"]');
  }
  var base = script ? script.src.replace(/\/tag\.js(\?.*)?$/, "") : "";
  if (!base) return;

  // MRC: 50% of pixels for 1 s; 30% for ads of at least 242 500 px²; video 50% while
  // playing for 2 s.
  var LARGE_AD_PX = 242500;

  function safe(fn) {
    return function () {
      try {
        return fn.apply(this, arguments);
      } catch (e) {
        /* never break the host page */
      }
    };
  }

  function beacon(url) {
    try {
      if (navigator.sendBeacon && navigator.sendBeacon(url)) return;
    } catch (e) {}
    try {
      fetch(url, { method: "POST", keepalive: true, mode: "no-cors", credentials: "omit" })["catch"](function () {});
    } catch (e) {}
  }

  var styled = false;
  function addStyle() {
    if (styled) return;
    styled = true;
    var s = document.createElement("style");
    s.textContent =
      ".adtally-ad{--a-bg:var(--adtally-bg,#fff);--a-fg:var(--adtally-fg,#1b1f24);--a-mu:var(--adtally-muted,#5b6470);" +
      "--a-ac:var(--adtally-accent,#0b63ce);--a-bd:var(--adtally-border,#d8dde3);box-sizing:border-box;display:block;" +
      "position:relative;background:var(--a-bg);color:var(--a-fg);border:1px solid var(--a-bd);" +
      "border-radius:var(--adtally-radius,8px);font:14px/1.4 var(--adtally-font,system-ui,sans-serif);overflow:hidden;" +
      "text-decoration:none;max-width:100%}" +
      ".adtally-ad *{box-sizing:border-box}.adtally-ad:focus-visible{outline:2px solid var(--a-ac);outline-offset:2px}" +
      ".adtally-label{position:absolute;top:4px;right:6px;font-size:11px;color:var(--a-mu);background:var(--a-bg);" +
      "padding:0 4px;border-radius:3px}" +
      ".adtally-media{display:block;width:100%;height:auto;border:0;background:#eef1f4}" +
      ".adtally-text{display:block;padding:10px 12px}.adtally-h{display:block;font-weight:600;font-size:15px;margin-right:24px}" +
      ".adtally-b{display:block;color:var(--a-mu);margin-top:2px}" +
      ".adtally-cta{display:inline-block;margin-top:8px;padding:4px 10px;border-radius:4px;background:var(--a-ac);" +
      "color:#fff;font-weight:600}" +
      ".adtally-compact{display:flex;align-items:center;min-height:72px}" +
      ".adtally-compact .adtally-media{width:72px;height:72px;flex:none;object-fit:cover}" +
      ".adtally-compact .adtally-text{flex:1}.adtally-compact .adtally-cta{margin-top:4px}" +
      ".adtally-sidebar{width:300px}.adtally-sidebar .adtally-media{height:157px;object-fit:cover}" +
      ".adtally-video{width:400px}.adtally-video .adtally-media{aspect-ratio:16/9}";
    (document.head || document.documentElement).appendChild(s);
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text) e.textContent = text; // text only: ad copy is never parsed as HTML
    return e;
  }

  function isHttpUrl(u) {
    return typeof u === "string" && /^https?:\/\//i.test(u);
  }

  /** Builds the creative; calls `rendered` once it has painted (image loaded or failed). */
  function render(slot, d, rendered) {
    var ad = d.ad || {};
    var format = ad.format === "sidebar" || ad.format === "video" ? ad.format : "compact";
    var link = el("a", "adtally-ad adtally-" + format);
    link.href = d.click_url;
    link.target = "_top";
    link.rel = "sponsored noopener";
    link.setAttribute("aria-label", "Ad: " + (ad.headline || ""));
    var label = el("span", "adtally-label", "Ad");
    var media = null;
    if (format === "video" && isHttpUrl(ad.video_url)) {
      media = el("video", "adtally-media");
      media.muted = true;
      media.defaultMuted = true;
      media.loop = true;
      media.autoplay = true;
      media.playsInline = true;
      media.setAttribute("muted", "");
      media.setAttribute("playsinline", "");
      media.setAttribute("aria-hidden", "true");
      media.src = ad.video_url;
      // Muted inline video may autoplay everywhere; ask explicitly for browsers that wait.
      var started = media.play && media.play();
      if (started && started["catch"]) started["catch"](function () {});
    } else if (isHttpUrl(ad.image_url)) {
      media = el("img", "adtally-media");
      media.alt = ad.headline || "";
      media.src = ad.image_url;
    }
    var text = el("span", "adtally-text");
    text.appendChild(el("span", "adtally-h", ad.headline));
    if (ad.body) text.appendChild(el("span", "adtally-b", ad.body));
    text.appendChild(el("span", "adtally-cta", ad.cta || "Learn more"));
    if (media) link.appendChild(media);
    link.appendChild(text);
    link.appendChild(label);
    addStyle();
    slot.appendChild(link);

    var done = false;
    var fire = safe(function () {
      if (done) return;
      done = true;
      // The next frame: the creative is laid out and painted.
      requestAnimationFrame(function () {
        setTimeout(safe(rendered), 0);
      });
    });
    if (media && media.tagName === "IMG" && !media.complete) {
      media.addEventListener("load", fire);
      media.addEventListener("error", fire);
    } else if (media && media.tagName === "VIDEO") {
      media.addEventListener("loadeddata", fire);
      media.addEventListener("error", fire);
      setTimeout(fire, 3000); // a slow video still shows its headline and link
    } else {
      fire();
    }
    return { link: link, video: media && media.tagName === "VIDEO" ? media : null };
  }

  /** Sends `url` once the ad has met the MRC rule without interruption. */
  function watchViewability(node, video, url) {
    if (!("IntersectionObserver" in window)) return; // cannot measure: never claim viewable
    var rect = node.getBoundingClientRect();
    var needRatio = video ? 0.5 : rect.width * rect.height >= LARGE_AD_PX ? 0.3 : 0.5;
    var needMs = video ? 2000 : 1000;
    var ratio = 0;
    var timer = null;
    var sent = false;
    // Playing means frames are advancing: not paused, not ended, not stalled for data.
    var playing = !!video && !video.paused && video.readyState > 2;
    var io;

    var check = safe(function () {
      if (sent) return;
      var ok = ratio >= needRatio && document.visibilityState === "visible" && (!video || playing);
      if (ok && !timer) {
        timer = setTimeout(
          safe(function () {
            timer = null;
            if (sent) return;
            sent = true;
            io.disconnect();
            document.removeEventListener("visibilitychange", check);
            beacon(url);
          }),
          needMs
        );
      } else if (!ok && timer) {
        // Continuous time: any drop resets the clock.
        clearTimeout(timer);
        timer = null;
      }
    });

    io = new IntersectionObserver(
      safe(function (entries) {
        ratio = entries[entries.length - 1].intersectionRatio;
        check();
      }),
      { threshold: [0, 0.3, 0.5, 0.75, 1] }
    );
    io.observe(node);
    document.addEventListener("visibilitychange", check);
    if (video) {
      var state = function (on) {
        return function () {
          playing = on;
          check();
        };
      };
      video.addEventListener("playing", state(true));
      ["pause", "waiting", "ended", "emptied"].forEach(function (e) {
        video.addEventListener(e, state(false));
      });
    }
  }

  var fill = safe(function (slot) {
    var placement = slot.getAttribute("data-adtally-placement");
    if (!placement || slot.getAttribute("data-adtally-state")) return;
    slot.setAttribute("data-adtally-state", "loading");
    var q = "placement=" + encodeURIComponent(placement);
    var uid = slot.getAttribute("data-adtally-uid");
    if (uid) q += "&uid=" + encodeURIComponent(uid);
    fetch(base + "/v1/decision?" + q, { mode: "cors", credentials: "omit", cache: "no-store" })
      .then(function (r) {
        // 204: no eligible ad. The slot stays exactly as the page made it.
        return r.status === 200 ? r.json() : null;
      })
      .then(
        safe(function (d) {
          if (!d || !d.ad || !isHttpUrl(d.click_url)) {
            slot.setAttribute("data-adtally-state", "empty");
            return;
          }
          var shown = render(slot, d, function () {
            slot.setAttribute("data-adtally-state", "rendered");
            beacon(d.impression_url);
            watchViewability(shown.link, shown.video, d.viewable_url);
          });
        })
      )
      ["catch"](function () {
        try {
          slot.setAttribute("data-adtally-state", "empty");
        } catch (e) {}
      });
  });

  ns.scan = safe(function () {
    var slots = document.querySelectorAll("[data-adtally-placement]");
    for (var i = 0; i < slots.length; i++) fill(slots[i]);
  });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", ns.scan);
  } else {
    ns.scan();
  }
})();
