"""Continues in both phases: the boundary's baseline cost for a Python filter."""

import weft


class Noop(weft.Filter):
    def on_request(self, request):
        return weft.CONTINUE

    def on_response(self, response):
        return weft.CONTINUE


Hooks = weft.export(Noop)
