# A third-party service the way releases usually come: a tarball from a
# download server (checksum pinned), unpacked, installed by its own script,
# and run by systemd. The URL is an attribute, so an environment can point
# it at a mirror ([component:tool] url = ...).
from batou.component import Attribute, Component
from batou.lib.archive import Extract
from batou.lib.download import Download
from executor.lib.command import Command
from executor.lib.systemd import Unit

RELEASE = "example-tool-1.0"


class Tool(Component):
    url = Attribute(str, default=f"https://downloads.example.com/{RELEASE}.tar.gz")
    checksum_sha256 = "81dc11b3ec5c0aa1058299fedde1e2da9539bb858cbed7e47268995921812972"
    port = Attribute(int, default=7000)

    def configure(self):
        self += Download(
            self.url, target=f"{RELEASE}.tar.gz", checksum=f"sha256:{self.checksum_sha256}"
        )
        self += Extract(f"{RELEASE}.tar.gz", target="release", strip=1)
        release = self._
        # The release's own installer; it runs again only for a new release.
        self += Command(
            "sh install.sh {{component.workdir}}/installed",
            cwd="release",
            unless=["cmp", "-s", "bin/example-tool", "../installed/bin/example-tool"],
        )
        installed = self._
        self += Unit("example-tool.service", source="example-tool.service",
                     restart_on=[release, installed])
