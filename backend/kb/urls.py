from django.urls import path

from backend.kb import views

urlpatterns = [
    path("", views.index, name="help-index"),
    path("<slug:slug>/", views.article, name="help-article"),
]
