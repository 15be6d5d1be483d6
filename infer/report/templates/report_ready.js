window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (img) { return !(img.complete && img.naturalWidth > 0); });
  var body = document.body;
  body.setAttribute("data-images", String(images.length));
  body.setAttribute("data-broken-images", String(broken.length));
  body.setAttribute("data-errors", String(window.__reportErrors.length));
  var page = document.documentElement;
  body.setAttribute("data-overflow-x", String(Math.max(0, page.scrollWidth - page.clientWidth)));
  var clipped = images.filter(function (img) {
    var box = img.getBoundingClientRect();
    return box.left < 0 || box.right > page.clientWidth + 0.5;
  });
  body.setAttribute("data-clipped-images", String(clipped.length));
  body.setAttribute("data-ready", "true");
});
