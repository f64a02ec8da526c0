# An application: a templated configuration, host data, an override
# (workers, set per environment), a restart that reacts to changes, and its
# address provided for other components (the frontend) to find.
from batou.component import Attribute, Component, ConfigString, handle_event
from batou.lib.file import File
from batou.utils import Address


class App(Component):
    workers = Attribute(int, default=2)
    listen = Attribute(str, default=ConfigString("{{host.fqdn}}:8080"))

    def configure(self):
        self.alias = self.host.data.get("alias", self.host.fqdn)
        # Resolved once, in the builder: [resolver] overrides first.
        self.address = Address(self.listen)
        self.provide("app", self.address)
        # app.conf beside this file is the template (File's implicit source).
        self += File("app.conf")
        # Absolute paths land in the sandbox when [vfs] says so.
        self += File("/etc/example/app.env", content="ALIAS={{component.alias}}\n", leading=True)
        self += Restart()


class Restart(Component):
    """Restarts the app when its configuration is newer than the last restart."""

    def configure(self):
        self.stamp = self.map("restarted.stamp")

    @handle_event("before-update", "precursor")
    def announce(self, component):
        self.log("%s is about to change; the app will restart", component._breadcrumb)

    def verify(self):
        self.assert_file_is_current(self.stamp, [self.map("app.conf")])

    def update(self):
        self.touch(self.stamp)
