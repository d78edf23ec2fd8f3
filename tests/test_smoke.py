from tests.conftest import World


def test_open_case_and_read_it_back(world: World) -> None:
    ngo = world.agency("ngo-a")
    case_id = ngo.open_case(payload={"identity": {"name": "X"}})
    r = ngo.read(case_id)
    assert r.status_code == 200, r.text
    assert r.json()["payload"] == {"identity": {"name": "X"}}
