/* adtally dashboard: the little the server-rendered pages do in the browser. Everything
   works without it; with it the range picker applies on change (and shows the custom
   dates only for a custom range), and the ad form's preview follows what is typed.
   Text only ever goes in through textContent. */
(function () {
  "use strict";

  function rangePicker() {
    var form = document.getElementById("range-form");
    var select = document.getElementById("range");
    var custom = document.getElementById("custom-dates");
    if (!form || !select || !custom) return;
    function sync() { custom.hidden = select.value !== "custom"; }
    sync();
    select.addEventListener("change", function () {
      sync();
      if (select.value !== "custom") {
        document.getElementById("from").value = "";
        document.getElementById("to").value = "";
        form.submit();
      }
    });
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text) e.textContent = text;
    return e;
  }

  /** The ad as the tag renders it (see tag.js), from the form's fields. */
  function adPreview() {
    var form = document.getElementById("ad-form");
    var box = document.getElementById("a-preview");
    if (!form || !box) return;
    function value(name) { var f = form.elements[name]; return f ? f.value.trim() : ""; }
    function http(u) { return /^https?:\/\//i.test(u); }
    function draw() {
      var format = value("format");
      if (format !== "sidebar" && format !== "video") format = "compact";
      var link = el("a", "adtally-ad adtally-" + format);
      if (http(value("target_url"))) link.href = value("target_url");
      link.rel = "sponsored noopener";
      link.setAttribute("aria-label", "Ad: " + value("headline"));
      var media = null;
      if (format === "video" && /^https:\/\//i.test(value("video_url"))) {
        media = el("video", "adtally-media");
        media.muted = true; media.loop = true; media.autoplay = true;
        media.setAttribute("playsinline", ""); media.setAttribute("aria-hidden", "true");
        media.src = value("video_url");
      } else if (http(value("image_url"))) {
        media = el("img", "adtally-media");
        media.alt = value("headline");
        media.src = value("image_url");
      }
      var text = el("span", "adtally-text");
      text.appendChild(el("span", "adtally-h", value("headline")));
      if (value("body")) text.appendChild(el("span", "adtally-b", value("body")));
      text.appendChild(el("span", "adtally-cta", value("cta") || "Learn more"));
      if (media) link.appendChild(media);
      link.appendChild(text);
      link.appendChild(el("span", "adtally-label", "Ad"));
      box.replaceChildren(link);
    }
    form.addEventListener("input", draw);
    form.addEventListener("change", draw);
  }

  rangePicker();
  adPreview();
})();
