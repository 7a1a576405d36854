from django.contrib import admin
from django.urls import path

from backend.front import views as front
from backend.ops import views as ops

urlpatterns = [
    path("", front.demo, name="demo"),
    path("widget.js", front.widget_js, name="widget-js"),
    path("admin/", admin.site.urls),
    path("healthz", ops.healthz, name="healthz"),
]
