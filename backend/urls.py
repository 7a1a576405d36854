from django.contrib import admin
from django.urls import include, path

from backend.front import views as front
from backend.ops import views as ops
from backend.tickets import views as tickets

urlpatterns = [
    path("", front.demo, name="demo"),
    path("widget.js", front.widget_js, name="widget-js"),
    path("admin/", admin.site.urls),
    path("help/", include("backend.kb.urls")),
    path("api/sites/<str:site_key>/tickets/", tickets.submit_ticket, name="ticket-submit"),
    path("api/sites/<str:site_key>/tickets/<str:ticket_id>/", tickets.ticket_status, name="ticket-status"),
    path("healthz", ops.healthz, name="healthz"),
]
