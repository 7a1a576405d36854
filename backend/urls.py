from django.contrib import admin
from django.urls import include, path

from backend.front import views as front

urlpatterns = [
    path("", front.demo, name="demo"),
    path("widget.js", front.widget_js, name="widget-js"),
    path("admin/", admin.site.urls),
    path("help/", include("backend.kb.urls")),
]
